"""Model cards: a few built-in cards plus ``<data>/custom_model_cards/<org>--<name>.toml``.

Contract: cards are snake_case dicts as in exo's TOML files; ``card_json(card, gen)`` gives the
camelCase form exo's API sends, ``model_list_entry`` the snake_case ``/v1/models`` row;
``card_from_local`` builds a card from a local model dir (exo's offline ``fetch_from_hf``) and
``card_toml`` writes one as exo saves it.
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                  "presence_penalty", "frequency_penalty", "thinking", "non_thinking")

BUILTIN_CARDS: list[dict[str, Any]] = [
    {"model_id": "mlx-community/Llama-3.2-1B-Instruct-4bit", "n_layers": 16, "hidden_size": 2048,
     "num_key_value_heads": 8, "supports_tensor": True, "tasks": ["TextGeneration"], "family": "llama",
     "quantization": "4bit", "base_model": "Llama 3.2 1B", "capabilities": ["text"],
     "context_length": 131072, "backends": ["MlxMetal", "MlxCuda", "MlxCpu"],
     "storage_size": {"in_bytes": 729808896},
     "sampling_defaults": {"temperature": 0.6, "top_p": 0.9}},
    {"model_id": "mlx-community/Llama-3.2-3B-Instruct-4bit", "n_layers": 28, "hidden_size": 3072,
     "num_key_value_heads": 8, "supports_tensor": True, "tasks": ["TextGeneration"], "family": "llama",
     "quantization": "4bit", "base_model": "Llama 3.2 3B", "capabilities": ["text"],
     "context_length": 131072, "backends": ["MlxMetal", "MlxCuda", "MlxCpu"],
     "storage_size": {"in_bytes": 1863319552}},
    {"model_id": "mlx-community/Qwen3-0.6B-4bit", "n_layers": 28, "hidden_size": 1024,
     "num_key_value_heads": 8, "supports_tensor": False, "tasks": ["TextGeneration"], "family": "qwen",
     "quantization": "4bit", "base_model": "Qwen3 0.6B", "capabilities": ["text", "thinking"],
     "context_length": 40960, "backends": ["MlxMetal", "MlxCuda", "MlxCpu"], "reasoning_dialect": "qwen3",
     "storage_size": {"in_bytes": 342884352}},
    {"model_id": "mlx-community/Qwen3.5-122B-A10B-4bit", "n_layers": 48, "hidden_size": 3072,
     "num_key_value_heads": 2, "supports_tensor": True, "tasks": ["TextGeneration"], "family": "qwen",
     "quantization": "4bit", "base_model": "Qwen3.5 122B A10B", "capabilities": ["text", "thinking"],
     "context_length": 262144, "backends": ["MlxMetal", "MlxCuda", "MlxCpu"], "reasoning_dialect": "qwen3",
     "storage_size": {"in_bytes": 69593314272}},
]


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def camelize(obj: Any) -> Any:
    """Recursively convert dict keys from snake_case to camelCase."""
    if isinstance(obj, dict):
        return {_camel(k): camelize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [camelize(v) for v in obj]
    return obj


def normalize_card(raw: dict[str, Any], is_custom: bool) -> dict[str, Any]:
    """Fill exo's ModelCard defaults in field order."""
    sampling = {k: None for k in _SAMPLING_KEYS}
    sampling.update(raw.get("sampling_defaults") or {})
    return {
        "model_id": raw["model_id"], "storage_size": {"in_bytes": int(raw["storage_size"]["in_bytes"])},
        "n_layers": int(raw["n_layers"]), "hidden_size": int(raw.get("hidden_size", 1)),
        "supports_tensor": bool(raw.get("supports_tensor", False)),
        "num_key_value_heads": raw.get("num_key_value_heads"), "tasks": list(raw.get("tasks", ["TextGeneration"])),
        "components": raw.get("components"), "family": raw.get("family", ""),
        "quantization": raw.get("quantization", ""), "base_model": raw.get("base_model", ""),
        "capabilities": list(raw.get("capabilities", [])),
        "backends": list(raw.get("backends", ["MlxMetal", "MlxCuda", "MlxCpu"])),
        "reasoning_dialect": raw.get("reasoning_dialect", "none"),
        "context_length": int(raw.get("context_length", 0)), "uses_cfg": bool(raw.get("uses_cfg", False)),
        "trust_remote_code": bool(raw.get("trust_remote_code", True)), "is_custom": is_custom,
        "vision": raw.get("vision"), "sampling_defaults": sampling,
    }


def load_custom_cards(cards_dir: Path) -> list[dict[str, Any]]:
    """Parse every ``*.toml`` in the custom cards dir; broken files are skipped."""
    out: list[dict[str, Any]] = []
    if not cards_dir.is_dir():
        return out
    for path in sorted(cards_dir.glob("*.toml")):
        try:
            out.append(normalize_card(tomllib.loads(path.read_text(encoding="utf-8")), True))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def builtin_cards() -> list[dict[str, Any]]:
    """The emulator's built-in cards plus, as exo, every TOML in ``$EXO_RESOURCES_DIR/inference_model_cards``."""
    import os

    cards = [normalize_card(c, False) for c in BUILTIN_CARDS]
    res = os.environ.get("EXO_RESOURCES_DIR")
    if res:
        cards += [{**c, "is_custom": False} for c in load_custom_cards(Path(res) / "inference_model_cards")]
    return cards


def card_json(card: dict[str, Any], generation: str) -> dict[str, Any]:
    """camelCase card as the API serializes it (OLD v1.0.71 cards have no ``backends`` and no
    ``reasoning_dialect``)."""
    body = dict(card)
    if generation != "new":
        body.pop("backends", None)
        body.pop("reasoning_dialect", None)
    return camelize(body)


def model_list_entry(card: dict[str, Any], generation: str = "new") -> dict[str, Any]:
    """A ``ModelListModel`` row (snake_case; v1.0.71 rows have no ``reasoning_dialect``)."""
    mid = card["model_id"]
    return {
        "id": mid, "object": "model", "created": int(time.time()), "owned_by": "exo",
        "hugging_face_id": mid, "name": mid.split("/")[-1], "description": "",
        "context_length": card["context_length"], "tags": [],
        "storage_size_megabytes": round(card["storage_size"]["in_bytes"] / (1024 ** 2)),
        "supports_tensor": card["supports_tensor"], "tasks": card["tasks"], "is_custom": card["is_custom"],
        "family": card["family"], "quantization": card["quantization"], "base_model": card["base_model"],
        "capabilities": card["capabilities"],
        **({"reasoning_dialect": card["reasoning_dialect"]} if generation == "new" else {}),
    }


def uncamel_card(card: dict[str, Any]) -> dict[str, Any]:
    """Accept a camel or snake card from a request body and return the snake form."""
    import re

    def snake(k: str) -> str:
        return re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower()

    def conv(o: Any) -> Any:
        if isinstance(o, dict):
            return {snake(k): conv(v) for k, v in o.items()}
        if isinstance(o, list):
            return [conv(v) for v in o]
        return o

    return normalize_card(conv(card), bool(card.get("isCustom", card.get("is_custom", False))))


_LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_decoder_layers", "decoder_layers")
_TENSOR_ARCHS = ("LlamaForCausalLM", "Qwen3MoeForCausalLM", "Qwen3NextForCausalLM", "GptOssForCausalLM",
                 "DeepseekV3ForCausalLM", "MiniMaxM2ForCausalLM")


def card_from_local(model_id: str, model_dir: Path) -> dict[str, Any]:
    """``ModelCard.fetch_from_hf`` offline: the card built from the local ``config.json`` and the
    safetensors index (``metadata.total_size``, else the weight files' sizes); raises ValueError."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        index = json.loads(next(iter(sorted(model_dir.rglob("*.safetensors.index.json")))).read_text(encoding="utf-8"))
    except (OSError, ValueError, StopIteration) as exc:
        raise ValueError(f"{model_id}: no usable config.json / safetensors index in {model_dir}: {exc}") from None
    config = {**(config.get("text_config") or {}), **config}
    layers = next((config[k] for k in _LAYER_KEYS if isinstance(config.get(k), int)), None)
    if layers is None:
        raise ValueError(f"{model_id}: config.json has no layer count")
    size = (index.get("metadata") or {}).get("total_size")
    if not isinstance(size, int):
        files = set((index.get("weight_map") or {}).values())
        size = sum((model_dir / f).stat().st_size for f in files if (model_dir / f).exists())
    archs = config.get("architectures") or []
    return normalize_card({
        "model_id": model_id, "storage_size": {"in_bytes": int(size)}, "n_layers": int(layers),
        "hidden_size": int(config.get("hidden_size") or 0), "num_key_value_heads": config.get("num_key_value_heads"),
        "supports_tensor": len(archs) == 1 and archs[0] in _TENSOR_ARCHS, "tasks": ["TextGeneration"],
        "capabilities": ["text"], "context_length": int(config.get("max_position_embeddings") or 0),
        "trust_remote_code": False}, True)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def card_toml(card: dict[str, Any]) -> str:
    """A card as exo writes it to ``custom_model_cards/`` (nulls and ``is_custom`` left out)."""
    lines, tables = [], []
    for k, v in card.items():
        if v is None or k == "is_custom":
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, body in tables:
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in body.items() if v is not None and not isinstance(v, dict)]
    return "\n".join(lines) + "\n"

"""Repos the sandbox hub serves beside the tiny model: one per serving no-go, each caught at preflight by the
serving verdict from the hub's metadata, with nothing downloaded.

| repo | what the verdict reads |
|---|---|
| `UNKNOWN_ARCH` | the tiny model with config.json's `model_type` one no mlx-lm has (`ARCH_TYPE`) |
| `GGUF_ONLY` | a README and one small `.gguf` (GGUF magic, version 3), no config.json: a llama.cpp-style repo |
| `DOES_NOT_FIT` | an 8-bit llama whose index declares `DOES_NOT_FIT_BYTES` (a DeepSeek-V3-8bit-sized model) in |
| | two shards; the hub lists them at their declared sizes (`repos.DECLARED`) while it holds a few bytes of each |

Contract: `publish_serving_repos(repos_dir, model_dir, work_dir)` (re)builds each repo under `work_dir` from the
tiny model in `model_dir` and publishes it to the hub's `repos_dir`; cheap (kilobytes), idempotent.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from sandbox.hub.repos import DECLARED, publish

UNKNOWN_ARCH = "modeldrop/tiny-unknown-arch-sbx"
GGUF_ONLY = "modeldrop/tiny-gguf-only-sbx"
DOES_NOT_FIT = "modeldrop/huge-does-not-fit-sbx"
ARCH_TYPE, ARCH_CLASS = "sbx_unreleased_moe", "SbxUnreleasedMoeForCausalLM"
DOES_NOT_FIT_BYTES = 713_000_000_000
SHARD_HEADER = 1_000  # bytes each declared shard holds beyond its share of the declared total
REPOS = (UNKNOWN_ARCH, GGUF_ONLY, DOES_NOT_FIT)


def _json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def _unknown_arch(dest: Path, model_dir: Path) -> None:
    """The tiny model, config.json's model_type and architectures changed."""
    for p in model_dir.iterdir():
        if p.is_file():
            shutil.copy2(p, dest / p.name)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(model_type=ARCH_TYPE, architectures=[ARCH_CLASS])
    _json(dest / "config.json", config)


def _gguf_only(dest: Path) -> None:
    """A GGUF file (magic, version 3, no tensors, no metadata) and a README: nothing mlx-lm reads."""
    (dest / "README.md").write_text("# tiny-gguf-only-sbx\n\nGGUF weights only (llama.cpp), for the sandbox.\n")
    (dest / "tiny-llama-sbx-Q4_K_M.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))


def _does_not_fit(dest: Path, model_dir: Path) -> None:
    """An 8-bit llama config, an index declaring DOES_NOT_FIT_BYTES, two small shards listed at their share."""
    config = json.loads((model_dir / "config.json").read_text())
    config["quantization"] = config["quantization_config"] = {"group_size": 64, "bits": 8}
    _json(dest / "config.json", config)
    shards = [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    header = json.dumps({"__metadata__": {"format": "mlx"}}).encode()
    for name in shards:
        (dest / name).write_bytes(struct.pack("<Q", len(header)) + header)
    _json(dest / "model.safetensors.index.json", {
        "metadata": {"total_size": DOES_NOT_FIT_BYTES},
        "weight_map": {"model.embed_tokens.weight": shards[0], "lm_head.weight": shards[1]}})
    _json(dest / DECLARED, {"sizes": {name: DOES_NOT_FIT_BYTES // 2 + SHARD_HEADER for name in shards}})
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(model_dir / name, dest / name)


def publish_serving_repos(repos_dir: Path, model_dir: Path, work_dir: Path) -> list[str]:
    """Build each repo under work_dir from the tiny model and publish it to the hub; returns their ids."""
    for repo_id, build in ((UNKNOWN_ARCH, lambda d: _unknown_arch(d, model_dir)), (GGUF_ONLY, _gguf_only),
                           (DOES_NOT_FIT, lambda d: _does_not_fit(d, model_dir))):
        dest = work_dir / repo_id
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        build(dest)
        publish(repos_dir, repo_id, dest)
    return list(REPOS)

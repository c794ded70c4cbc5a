"""The sandbox's tiny model: a random-weight Llama that mlx-lm loads and generates with.

Contract: `generate_model(out_dir, ...)` writes, deterministically for its arguments,

- `model-0000K-of-0000N.safetensors` shards and `model.safetensors.index.json`
  (`metadata.total_size` = the sum of the tensors' data bytes, `weight_map` tensor -> shard);
- `config.json` (LlamaForCausalLM), `generation_config.json`;
- a byte-level BPE tokenizer trained here with `tokenizers` (`tokenizer.json`,
  `tokenizer_config.json` with a ChatML `chat_template` that honours `enable_thinking` the
  way Qwen3 does, `special_tokens_map.json`); special tokens `<|endoftext|>`,
  `<|im_start|>`, `<|im_end|>`, plus `<think>` / `</think>` as non-special added tokens;
- `README.md` and `.gitattributes`, as a real Hub repo has them;

and returns a dict describing it (see `generate_model`). The same arguments give the same
bytes in every file. `eos` steers generation through a logit bias carried by hidden dim 0:
`never` (EOS and special tokens are never sampled, so every request runs to max_tokens),
`natural` (untouched random weights), `always` (EOS first, an empty answer).

Nothing here downloads anything; numpy, safetensors and tokenizers only.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

MODEL_ID = "modeldrop/tiny-llama-sbx"
EOS_MODES = ("never", "natural", "always")
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
THINK_TOKENS = (THINK_OPEN, THINK_CLOSE)
CONTEXT_LENGTH = 4096
N_HEADS = 4
N_KV_HEADS = 2

# ChatML like Qwen3: with thinking on (the default) the generation prompt opens <think>;
# with enable_thinking=false it closes an empty think block, as Qwen3's template does.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- elif message['content'] is none -%}{%- set content = '' -%}"
    "{%- else -%}{%- set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') -%}{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}{{- '<think>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or "
    "one had by word but not what all were we when your can said there use an each which she do "
    "how their if will up other about out many then them these so some her would make like him "
    "into time has look two more write go see number no way could people my than first water "
    "been call who oil its now find long down day did get come made may part hello world model "
    "answer question think reason cluster node token exo mac apple silicon memory test check "
    "what is two plus three four five six seven eight nine ten yes please thanks sure okay"
).split()


def _corpus(seed: int, n_words: int = 40000) -> list[str]:
    """Deterministic training text: common English words and syllable pseudo-words."""
    rng = random.Random(seed)
    sylls = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "ch", "sh", "ng"]
    lines, line = [], []
    for _ in range(n_words):
        if rng.random() < 0.5:
            word = rng.choice(_WORDS)
        else:
            word = "".join(rng.choice(sylls) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.05:
            word = word.capitalize()
        line.append(word + rng.choice(("", "", "", "", ",", ".", "?", "!")) if rng.random() < 0.1 else word)
        if len(line) >= 12:
            lines.append(" ".join(line))
            line = []
    digits = [" ".join(str(rng.randint(0, 999)) for _ in range(8)) for _ in range(200)]
    return lines + digits


def train_tokenizer(vocab: int, seed: int) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` of exactly <= `vocab` entries, think tokens last."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab - len(THINK_TOKENS), special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def _shard_plan(layers: int, shards: int) -> list[int]:
    """Shard index (0-based) for each unit [embed, layer 0..L-1, final]; every shard non-empty."""
    units = layers + 2
    if not 1 <= shards <= units:
        raise ValueError(f"shards must be 1..{units} for {layers} layers, got {shards}")
    return [j * shards // units for j in range(units)]


def _weights(layers: int, hidden: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
    """HF Llama tensor names -> float32 arrays, N(0, 0.02); norms are ones."""
    rng = np.random.default_rng(seed)
    inter, head_dim = 2 * hidden, hidden // N_HEADS
    kv = N_KV_HEADS * head_dim

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w = {"model.embed_tokens.weight": r(vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        w |= {p + "self_attn.q_proj.weight": r(hidden, hidden), p + "self_attn.k_proj.weight": r(kv, hidden),
              p + "self_attn.v_proj.weight": r(kv, hidden), p + "self_attn.o_proj.weight": r(hidden, hidden),
              p + "mlp.gate_proj.weight": r(inter, hidden), p + "mlp.up_proj.weight": r(inter, hidden),
              p + "mlp.down_proj.weight": r(hidden, inter),
              p + "input_layernorm.weight": np.ones(hidden, np.float32),
              p + "post_attention_layernorm.weight": np.ones(hidden, np.float32)}
    w["model.norm.weight"] = np.ones(hidden, np.float32)
    w["lm_head.weight"] = r(vocab, hidden)
    return w


PAD_SUFFIX = "self_attn.rotary_emb.inv_freq_pad"


def _padding(layers: int, pad_mb: int) -> dict[str, np.ndarray]:
    """`pad_mb` MB of zeros as one tensor per layer, named so mlx-lm's Llama drops them when loading
    (its sanitize removes every `self_attn.rotary_emb.inv_freq` key, as real checkpoints carry one)."""
    if pad_mb <= 0:
        return {}
    per_layer = -(-pad_mb * 1024 * 1024 // 4 // layers)
    return {f"model.layers.{i}.{PAD_SUFFIX}": np.zeros(per_layer, np.float32) for i in range(layers)}


def _apply_eos_bias(w: dict[str, np.ndarray], layers: int, bad_ids: list[int], eos_id: int, eos: str) -> None:
    """Make hidden dim 0 a constant 1.0 so lm_head[:, 0] acts as a per-token logit bias."""
    if eos == "natural":
        return
    w["model.embed_tokens.weight"][:, 0] = 1.0
    for i in range(layers):
        w[f"model.layers.{i}.self_attn.o_proj.weight"][0, :] = 0
        w[f"model.layers.{i}.mlp.down_proj.weight"][0, :] = 0
    head = w["lm_head.weight"]
    head[:, 0] = 0
    head[bad_ids, 0] = -100.0
    head[eos_id, 0] = -100.0 if eos == "never" else 100.0


def _bad_token_ids(tok: Any) -> list[int]:
    """Ids that decode to U+FFFD on their own, and every special or think token."""
    n = tok.get_vocab_size(with_added_tokens=True)
    bad = [i for i in range(n) if "\ufffd" in tok.decode([i], skip_special_tokens=False)]
    return sorted(set(bad) | {tok.token_to_id(t) for t in SPECIAL_TOKENS + THINK_TOKENS})


def _write_json(path: Path, obj: Any) -> None:
    """Deterministic, pretty JSON with a trailing newline."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _tokenizer_config(tok: Any) -> dict[str, Any]:
    """tokenizer_config.json for transformers' PreTrainedTokenizerFast."""
    decoder = {}
    for t in SPECIAL_TOKENS + THINK_TOKENS:
        decoder[str(tok.token_to_id(t))] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": t in SPECIAL_TOKENS}
    return {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": decoder,
            "bos_token": None, "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
            "eos_token": IM_END, "errors": "replace", "model_max_length": CONTEXT_LENGTH,
            "pad_token": ENDOFTEXT, "tokenizer_class": "PreTrainedTokenizerFast"}


def _config(layers: int, hidden: int, vocab: int, eos_id: int, pad_id: int) -> dict[str, Any]:
    """config.json of a LlamaForCausalLM."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": N_HEADS, "num_key_value_heads": N_KV_HEADS,
            "head_dim": hidden // N_HEADS, "vocab_size": vocab, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "max_position_embeddings": CONTEXT_LENGTH,
            "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
            "mlp_bias": False, "torch_dtype": "float32", "bos_token_id": None,
            "eos_token_id": eos_id, "pad_token_id": pad_id}


def _write_shards(out: Path, w: dict[str, np.ndarray], layers: int, shards: int) -> dict[str, Any]:
    """Write the safetensors shards and the index; returns the index dict."""
    from safetensors.numpy import save_file

    plan = _shard_plan(layers, shards)

    def unit_of(name: str) -> int:
        if name.startswith("model.layers."):
            return 1 + int(name.split(".")[2])
        return 0 if name.startswith("model.embed_tokens") else layers + 1

    file_of = {n: f"model-{plan[unit_of(n)] + 1:05d}-of-{shards:05d}.safetensors" for n in w}
    for fname in sorted(set(file_of.values())):
        part = {n: w[n] for n in sorted(w) if file_of[n] == fname}
        save_file(part, str(out / fname), metadata={"format": "pt"})
    total = sum(a.nbytes for a in w.values())
    return {"metadata": {"total_size": total}, "weight_map": dict(sorted(file_of.items()))}


def _readme(model_id: str, layers: int, hidden: int, vocab: int, eos: str, seed: int) -> str:
    """A short model card like the Hub shows."""
    return (f"---\nlicense: mit\nlibrary_name: mlx\npipeline_tag: text-generation\n---\n\n# {model_id}\n\n"
            f"Random-weight Llama for the modeldrop sandbox (layers={layers}, hidden={hidden}, "
            f"vocab={vocab}, eos={eos}, seed={seed}). It answers with noise, deterministically.\n")


def generate_model(out_dir: str | Path, *, layers: int = 4, hidden: int = 64, vocab: int = 2048,
                   shards: int = 3, eos: str = "never", seed: int = 0,
                   model_id: str = MODEL_ID, pad_mb: int = 0) -> dict[str, Any]:
    """Write the tiny model into `out_dir` (created; existing files of the same names replaced).
    `pad_mb` adds that many MB of padding tensors spread over the shards (see `_padding`): a model large
    enough that downloads take time, still loadable.

    Returns {"dir", "model_id", "files": {name: size}, "weight_files", "total_size"
    (index metadata), "storage_bytes" (sum of shard file sizes), "n_layers", "hidden_size",
    "num_key_value_heads", "context_length", "vocab_size", "eos_token_id", "eos", "seed"}.
    """
    if eos not in EOS_MODES:
        raise ValueError(f"eos must be one of {EOS_MODES}, got {eos!r}")
    if hidden % N_HEADS or vocab < 512:
        raise ValueError(f"hidden must be a multiple of {N_HEADS} and vocab >= 512")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(vocab, seed)
    eos_id, pad_id = tok.token_to_id(IM_END), tok.token_to_id(ENDOFTEXT)
    w = _weights(layers, hidden, vocab, seed)
    _apply_eos_bias(w, layers, _bad_token_ids(tok), eos_id, eos)
    w |= _padding(layers, pad_mb)
    index = _write_shards(out, w, layers, shards)
    _write_json(out / "model.safetensors.index.json", index)
    _write_json(out / "config.json", _config(layers, hidden, vocab, eos_id, pad_id))
    _write_json(out / "generation_config.json", {"eos_token_id": eos_id, "pad_token_id": pad_id,
                                                 "do_sample": False})
    (out / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    _write_json(out / "tokenizer_config.json", _tokenizer_config(tok))
    _write_json(out / "special_tokens_map.json", {"eos_token": IM_END, "pad_token": ENDOFTEXT,
                                                  "additional_special_tokens": [IM_START, IM_END]})
    (out / "README.md").write_text(_readme(model_id, layers, hidden, vocab, eos, seed), encoding="utf-8")
    (out / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                                        "*.gguf filter=lfs diff=lfs merge=lfs -text\n", encoding="utf-8")
    weight_files = sorted(set(index["weight_map"].values()))
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    return {"dir": str(out), "model_id": model_id, "files": files, "weight_files": weight_files,
            "total_size": index["metadata"]["total_size"],
            "storage_bytes": sum(files[f] for f in weight_files), "n_layers": layers,
            "hidden_size": hidden, "num_key_value_heads": N_KV_HEADS, "context_length": CONTEXT_LENGTH,
            "vocab_size": vocab, "eos_token_id": eos_id, "eos": eos, "seed": seed}


def model_card_toml(info: dict[str, Any]) -> str:
    """An exo custom model card (TOML, as exo stores one) for a model described by `generate_model`."""
    mid = info["model_id"]
    return (f'model_id = "{mid}"\n'
            f'n_layers = {info["n_layers"]}\n'
            f'hidden_size = {info["hidden_size"]}\n'
            f'num_key_value_heads = {info["num_key_value_heads"]}\n'
            f'context_length = {info["context_length"]}\n'
            f"supports_tensor = true\n"
            f'tasks = ["TextGeneration"]\n'
            f'capabilities = ["text", "thinking", "thinking_toggle"]\n'
            f'backends = ["MlxCpu"]\n'
            f'family = "llama"\n'
            f'quantization = "fp32"\n'
            f'base_model = "Tiny Llama (sandbox)"\n'
            f"\n[storage_size]\n"
            f'in_bytes = {info["storage_bytes"]}\n')


def folder_name(model_id: str = MODEL_ID) -> str:
    """exo's folder name for a model id: `org/name` -> `org--name`."""
    return model_id.replace("/", "--")

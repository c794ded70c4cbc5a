"""The sandbox's tiny model: layout, determinism, and real mlx-lm load + generation."""

from __future__ import annotations

import hashlib
import json
import struct
import tomllib
from pathlib import Path

import pytest

from sandbox.model import MODEL_ID, folder_name, generate_model, model_card_toml


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def _header(path: Path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("tiny")
    return d, generate_model(d)


def test_files_index_and_shards_are_consistent(model_dir: tuple[Path, dict]) -> None:
    d, info = model_dir
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json",
            "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors"} <= names
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shard_files = sorted(set(index["weight_map"].values()))
    assert shard_files == info["weight_files"] and len(shard_files) == 3
    data_bytes, seen = 0, set()
    for f in shard_files:
        header = _header(d / f)
        for name, t in header.items():
            if name == "__metadata__":
                continue
            assert index["weight_map"][name] == f
            data_bytes += t["data_offsets"][1] - t["data_offsets"][0]
            seen.add(name)
    assert seen == set(index["weight_map"]), "every tensor in the index is in exactly its shard"
    assert index["metadata"]["total_size"] == data_bytes == info["total_size"]
    assert 1_000_000 < info["storage_bytes"] < 3_000_000, "small enough for fast CI"
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 4 and cfg["hidden_size"] == 64


def test_tokenizer_has_chatml_and_think_tokens(model_dir: tuple[Path, dict]) -> None:
    d, info = model_dir
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"):
        assert tok.token_to_id(t) is not None, t
    assert tok.get_vocab_size(with_added_tokens=True) <= info["vocab_size"]
    tc = json.loads((d / "tokenizer_config.json").read_text())
    assert tc["eos_token"] == "<|im_end|>" and "enable_thinking" in tc["chat_template"]
    assert info["eos_token_id"] == tok.token_to_id("<|im_end|>")


def test_deterministic_for_a_seed(model_dir: tuple[Path, dict], tmp_path: Path) -> None:
    d, _ = model_dir
    generate_model(tmp_path / "again")
    assert _digests(tmp_path / "again") == _digests(d)
    generate_model(tmp_path / "other", seed=1)
    assert _digests(tmp_path / "other")["model-00001-of-00003.safetensors"] != \
        _digests(d)["model-00001-of-00003.safetensors"]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shards"):
        generate_model(tmp_path, layers=1, shards=4)
    with pytest.raises(ValueError, match="eos"):
        generate_model(tmp_path, eos="sometimes")


def test_model_card_is_exo_shaped(model_dir: tuple[Path, dict]) -> None:
    _, info = model_dir
    card = tomllib.loads(model_card_toml(info))
    assert card["model_id"] == MODEL_ID and folder_name() == "modeldrop--tiny-llama-sbx"
    assert card["storage_size"]["in_bytes"] == info["storage_bytes"]
    assert card["n_layers"] == 4 and card["backends"] == ["MlxCpu"] and "thinking" in card["capabilities"]
    for key in ("hidden_size", "num_key_value_heads", "context_length", "supports_tensor", "tasks",
                "family", "quantization", "base_model"):
        assert key in card, key


def _generate(path: Path, max_tokens: int, enable_thinking: bool = True) -> tuple[str, str, int, str]:
    from mlx_lm import load, stream_generate

    model, tok = load(str(path))
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is two plus three?"}],
                                     add_generation_prompt=True, tokenize=False, enable_thinking=enable_thinking)
    text, last = "", None
    for last in stream_generate(model, tok, prompt, max_tokens=max_tokens):
        text += last.text
    assert last is not None
    return prompt, text, last.generation_tokens, last.finish_reason


@pytest.mark.sandbox_run
def test_mlx_lm_loads_and_generates_to_max_tokens(model_dir: tuple[Path, dict]) -> None:
    d, _ = model_dir
    prompt, text, n, reason = _generate(d, 24)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n"), "thinking on opens <think>"
    assert n == 24 and reason == "length", "eos=never runs to max_tokens"
    assert text.strip() and "\ufffd" not in text
    assert _generate(d, 24) [1] == text, "greedy decoding is deterministic"
    off_prompt = _generate(d, 1, enable_thinking=False)[0]
    assert off_prompt.endswith("<think>\n\n</think>\n\n")


@pytest.mark.sandbox_run
def test_eos_always_answers_empty(tmp_path: Path) -> None:
    generate_model(tmp_path, eos="always", layers=2, shards=2)
    _, text, n, reason = _generate(tmp_path, 16)
    assert reason == "stop" and n == 1 and text == ""


@pytest.mark.sandbox_run
def test_padding_grows_the_shards_and_stays_loadable(model_dir: tuple[Path, dict], tmp_path: Path) -> None:
    """pad_mb makes every shard bigger by its share; mlx-lm still loads it and answers as without padding."""
    d, info = model_dir
    padded = generate_model(tmp_path, pad_mb=3)
    assert padded["storage_bytes"] - info["storage_bytes"] >= 3 * 1024 * 1024
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    pads = {f for n, f in index["weight_map"].items() if n.endswith("inv_freq_pad")}
    assert len(pads) >= 2, "padding is spread over the shards"
    assert _generate(tmp_path, 8)[1] == _generate(d, 8)[1]

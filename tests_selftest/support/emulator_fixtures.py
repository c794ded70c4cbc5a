"""Fixtures and helpers for the EXO emulator self-tests (tests_selftest/unit/emulator/).

The emulator tests import the fixtures and helpers they use from here (no registration needed).

Contract: ``EmuNode`` (from ``sandbox.emulator_driver``) runs ``python -m exo_emulator`` as a local subprocess
with its own HOME and
emulator.json on a 127.0.x.y address, and is stopped by pid; ``tiny_model`` builds a random-weight
Llama (3 shards + index + BPE tokenizer + ChatML template) once per session, using
``sandbox.model.generate_model`` when that module exists.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.emulator_driver import (  # noqa: F401 - the emulator tests import these from here
    EMULATOR_PYTHON,
    FAST_TIMING,
    MODEL_ID,
    SANDBOX,
    EmuNode,
    custom_card_toml,
    http,
    instance_body,
    wait_cluster,
    wait_for,
    wait_ready,
)
from tests_selftest.support.slots import slot

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


# ---- tiny model ----------------------------------------------------------------------------------
def _tokenizer(out: Path, vocab: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = ["hello", "world", "model", "drop", "cluster", "apple", "silicon", "ring", "token", "exo",
             "the", "a", "of", "and", "to", "in", "is", "it", "that", "for", "node", "mac", "shard"]
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(400)]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "bos_token": None, "chat_template": CHATML, "model_max_length": 4096}))
    return tok


def make_tiny_model(out: Path, layers: int = 4, hidden: int = 64, vocab: int = 2048, shards: int = 3,
                    eos: str = "never") -> Path:
    """Random-weight Llama in ``out`` (sandbox-feasibility.md §2)."""
    import numpy as np
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(out, vocab)
    V = tok.get_vocab_size()
    H, L, inter = hidden, layers, 2 * hidden
    rng = np.random.default_rng(0)

    def r(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w = {"model.embed_tokens.weight": r(V, H), "model.norm.weight": np.ones(H, np.float32), "lm_head.weight": r(V, H)}
    kv = H // 4 * 2
    for i in range(L):
        p = f"model.layers.{i}."
        w.update({p + "self_attn.q_proj.weight": r(H, H), p + "self_attn.k_proj.weight": r(kv, H),
                  p + "self_attn.v_proj.weight": r(kv, H), p + "self_attn.o_proj.weight": r(H, H),
                  p + "mlp.gate_proj.weight": r(inter, H), p + "mlp.up_proj.weight": r(inter, H),
                  p + "mlp.down_proj.weight": r(H, inter), p + "input_layernorm.weight": np.ones(H, np.float32),
                  p + "post_attention_layernorm.weight": np.ones(H, np.float32)})
    eos_ids = [tok.token_to_id("<|im_end|>")]
    if eos != "natural":
        w["model.embed_tokens.weight"][:, 0] = 1.0
        for i in range(L):
            w[f"model.layers.{i}.self_attn.o_proj.weight"][0, :] = 0
            w[f"model.layers.{i}.mlp.down_proj.weight"][0, :] = 0
        w["lm_head.weight"][:, 0] = 0
        bad = [i for i in range(V) if "\ufffd" in tok.decode([i])] + [tok.token_to_id(s) for s in SPECIALS]
        w["lm_head.weight"][bad, 0] = -100.0
        w["lm_head.weight"][eos_ids, 0] = -100.0 if eos == "never" else 100.0
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": inter,
        "num_hidden_layers": L, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": H // 4,
        "vocab_size": V, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096,
        "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float32", "eos_token_id": eos_ids[0]}))

    def shard_of(name: str) -> int:
        if ".layers." not in name:
            return 0
        return 1 + int(name.split(".")[2]) * (shards - 1) // L

    names = sorted(w)
    files = {s: f"model-{s + 1:05d}-of-{shards:05d}.safetensors" for s in range(shards)}
    for s in range(shards):
        save_file({k: w[k] for k in names if shard_of(k) == s}, str(out / files[s]), metadata={"format": "pt"})
    total = sum(int(v.nbytes) for v in w.values())
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": {k: files[shard_of(k)] for k in names}}))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model directory (``<tmp>/modeldrop--tiny-llama-sbx``)."""
    out = tmp_path_factory.mktemp("tinymodel") / "modeldrop--tiny-llama-sbx"
    try:
        from sandbox.model import generate_model  # type: ignore[import-not-found]

        generate_model(out, layers=4, hidden=64, vocab=2048, shards=3, eos="never")
    except ImportError:
        make_tiny_model(out)
    return out


_SUBNET = [0]


def fresh_subnet() -> str:
    """`A.B`, the second and third octets of 127.A.B.x addresses no other test of this session uses: A is this
    worker's slot for the emulator (support.slots, so no sandbox and no other worker is on 127.A), B counts up."""
    _SUBNET[0] += 1
    if _SUBNET[0] > 250:
        raise RuntimeError("fresh_subnet: more than 250 emulator clusters in one worker")
    return f"{10 + slot('emulator')}.{_SUBNET[0]}"


@pytest.fixture
def emu_factory(tmp_path: Path) -> Iterator[Callable[..., EmuNode]]:
    """Make EmuNodes under tmp_path; every node started is stopped (by pid) at teardown."""
    made: list[EmuNode] = []

    def make(name: str, address: str, peers: list[str], **kw: Any) -> EmuNode:
        node = EmuNode(tmp_path, name, address, peers, **kw)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


def make_cluster(factory: Callable[..., EmuNode], n: int, **kw: Any) -> list[EmuNode]:
    sub = fresh_subnet()
    addrs = [f"127.{sub}.{11 + i}" for i in range(n)]
    return [factory(f"node{i + 1}", addrs[i], addrs, **kw) for i in range(n)]


@pytest.fixture(scope="module")
def new_pair(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[list[EmuNode]]:
    """A started 2-node NEW cluster (tiny model staged on both), shared by a module's read-only tests."""
    root = tmp_path_factory.mktemp("pair")
    sub = fresh_subnet()
    addrs = [f"127.{sub}.11", f"127.{sub}.12"]
    nodes = [EmuNode(root, f"node{i + 1}", addrs[i], addrs) for i in range(2)]
    try:
        for n in nodes:
            n.stage_model(tiny_model)
            n.start()
        wait_cluster(nodes)
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def place_and_create(node: EmuNode, min_nodes: int, model_id: str = MODEL_ID) -> str:
    code, inst = node.get(f"/instance/placement?model_id={model_id}&min_nodes={min_nodes}")
    assert code == 200, inst
    code, body = node.post("/instance", {"instance": inst})
    assert code == 200 and body["message"] == "Command received.", body
    return instance_body(inst)["instanceId"]


def sse_lines(node: EmuNode, path: str, body: dict[str, Any], timeout: float = 60.0) -> list[str]:
    """POST and return the raw SSE lines (without blank separators)."""
    req = urllib.request.Request(node.url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    return [ln for ln in text.split("\n") if ln]

"""Fixtures and helpers for the EXO emulator self-tests (tests_selftest/test_emulator_*.py).

Register in tests_selftest/conftest.py with ``pytest_plugins = ["tests_selftest.emulator_fixtures"]``
(the test modules also import the helpers directly, so they work without registration).

Contract: ``EmuNode`` runs ``python -m exo_emulator`` as a local subprocess with its own HOME and
emulator.json on a 127.0.x.y address, and is stopped by pid; ``tiny_model`` builds a random-weight
Llama (3 shards + index + BPE tokenizer + ChatML template) once per session, using
``sandbox.model.generate_model`` when that module exists.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SANDBOX = REPO / "sandbox"
MODEL_ID = "modeldrop/tiny-llama-sbx"
FAST_TIMING = {"hello_s": 0.3, "election_s": 1.0, "edge_probe_s": 0.5, "master_plan_s": 1.0,
               "node_timeout_s": 4.0, "info_s": 0.3, "ring_retry_s": [0.2, 0.2, 0.2, 0.2, 0.2],
               "ring_connect_timeout_s": 0.5, "runner_backoff_s": [0.2, 0.5], "keepalive_s": 1.0}
# the interpreter that runs the emulator (default: this one; the sandbox node venv works too)
EMULATOR_PYTHON = os.environ.get("MODELDROP_EMULATOR_PYTHON", sys.executable)
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


def custom_card_toml(model_dir: Path, model_id: str = MODEL_ID) -> str:
    cfg = json.loads((model_dir / "config.json").read_text())
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    return (f'model_id = "{model_id}"\nn_layers = {cfg["num_hidden_layers"]}\nhidden_size = {cfg["hidden_size"]}\n'
            f'num_key_value_heads = {cfg["num_key_value_heads"]}\nsupports_tensor = false\n'
            f'tasks = ["TextGeneration"]\nfamily = "llama"\nquantization = ""\nbase_model = "Tiny Llama"\n'
            f'capabilities = ["text"]\ncontext_length = 4096\nbackends = ["MlxMetal", "MlxCuda", "MlxCpu"]\n'
            f'[storage_size]\nin_bytes = {size}\n')


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model directory (``<tmp>/modeldrop--tiny-llama-sbx``)."""
    out = tmp_path_factory.mktemp("tinymodel") / "modeldrop--tiny-llama-sbx"
    try:
        sys.path.insert(0, str(REPO))
        from sandbox.model import generate_model  # type: ignore[import-not-found]

        generate_model(out, layers=4, hidden=64, vocab=2048, shards=3, eos="never")
    except ImportError:
        make_tiny_model(out)
    return out


# ---- nodes ---------------------------------------------------------------------------------------
def http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """(status, parsed JSON or text); never raises for HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, code = resp.read(), resp.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw.decode(errors="replace")


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``pred`` until truthy or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class EmuNode:
    """One emulator process with its own HOME."""

    def __init__(self, root: Path, name: str, address: str, peers: list[str], generation: str = "new",
                 layout: str = "macos", faults: dict[str, Any] | None = None, timing: dict[str, Any] | None = None,
                 ram_available: int = 12884901888, api_port: int = 52415) -> None:
        self.name, self.address, self.api_port = name, address, api_port
        self.home = root / name
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path = self.home / "emulator.json"
        self.config = {"generation": generation, "version": "0.3.70" if generation == "new" else "1.0.71",
                       "node_address": address, "peer_addresses": peers, "friendly_name": f"sbx-{name}",
                       "ram_total_bytes": 17179869184, "ram_available_bytes": ram_available, "layout": layout,
                       "faults": faults or {}, "timing": FAST_TIMING if timing is None else timing}
        self.config_path.write_text(json.dumps(self.config))
        self.proc: subprocess.Popen | None = None
        self.stderr_path = self.home / "stderr.txt"

    @property
    def exo_home(self) -> Path:
        return self.home / ".exo" if self.config["layout"] == "macos" else self.home / ".cache" / "exo"

    @property
    def data_home(self) -> Path:
        return self.home / ".exo" if self.config["layout"] == "macos" else self.home / ".local" / "share" / "exo"

    @property
    def log_path(self) -> Path:
        return self.exo_home / "exo_log" / "exo.log"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EXO_", "XDG_"))}
        env.update({"HOME": str(self.home), "PYTHONPATH": str(SANDBOX), "EXO_EMULATOR_CONFIG": str(self.config_path),
                    "PYTHONUNBUFFERED": "1"})
        if self.resources_dir.is_dir():
            env["EXO_RESOURCES_DIR"] = str(self.resources_dir)
        env.update(extra or {})
        return env

    def stage_model(self, model_dir: Path, model_id: str = MODEL_ID, card: bool = True) -> Path:
        import shutil

        dest = self.data_home / "models" / model_id.replace("/", "--")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(model_dir, dest)
        if card:  # a built-in card (EXO_RESOURCES_DIR): a TOML in custom_model_cards/ is deleted by EXO
            self.card_path(model_id).parent.mkdir(parents=True, exist_ok=True)
            self.card_path(model_id).write_text(custom_card_toml(model_dir, model_id))
        return dest

    @property
    def resources_dir(self) -> Path:
        return self.home / "exo-resources"

    def card_path(self, model_id: str = MODEL_ID) -> Path:
        """Where ``stage_model`` puts the model's card: a built-in card under ``EXO_RESOURCES_DIR``."""
        return self.resources_dir / "inference_model_cards" / f"{model_id.replace('/', '--')}.toml"

    def start(self, *flags: str, env: dict[str, str] | None = None, script: Path | None = None) -> EmuNode:
        """Start ``python -m exo_emulator`` (or ``script``, an executable launcher) with ``flags``."""
        head = [str(script)] if script else [EMULATOR_PYTHON, "-m", "exo_emulator"]
        args = [*head, "--api-port", str(self.api_port), *flags]
        self.proc = subprocess.Popen(args, env=self.env(env), stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "wb"), cwd=str(self.home))  # noqa: SIM115
        return self

    def run(self, *flags: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run to completion (for fatal-start and --help cases)."""
        return subprocess.run([EMULATOR_PYTHON, "-m", "exo_emulator", *flags], env=self.env(env),
                              capture_output=True, text=True, timeout=timeout, cwd=str(self.home))

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.api_port}"

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        return http("GET", self.url + path, timeout=timeout)

    def post(self, path: str, body: Any, timeout: float = 60.0) -> tuple[int, Any]:
        return http("POST", self.url + path, body, timeout=timeout)

    def state(self) -> dict[str, Any]:
        code, body = self.get("/state")
        assert code == 200, body
        return body

    def node_id(self) -> str:
        return wait_for(lambda: self.get("/node_id", timeout=2)[1], 30, f"{self.name} /node_id")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


_SUBNET = [random.Random(os.getpid()).randint(100, 200)]


def fresh_subnet() -> int:
    """A 127.<n>.x.y second octet nobody else in this session uses."""
    _SUBNET[0] += 1
    return _SUBNET[0]


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
    addrs = [f"127.{sub}.0.{11 + i}" for i in range(n)]
    return [factory(f"node{i + 1}", addrs[i], addrs, **kw) for i in range(n)]


@pytest.fixture(scope="module")
def new_pair(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[list[EmuNode]]:
    """A started 2-node NEW cluster (tiny model staged on both), shared by a module's read-only tests."""
    root = tmp_path_factory.mktemp("pair")
    sub = fresh_subnet()
    addrs = [f"127.{sub}.0.11", f"127.{sub}.0.12"]
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


def wait_cluster(nodes: list[EmuNode], timeout: float = 30.0) -> list[str]:
    """Wait until every node's /state lists every node with edges in both directions; returns ids."""
    ids = [n.node_id() for n in nodes]

    def formed() -> bool:
        for n in nodes:
            s = n.state()
            conns = s["topology"]["connections"]
            if sorted(s["nodeIdentities"]) != sorted(ids) or sorted(s["nodeMemory"]) != sorted(ids):
                return False
            if not all(b in conns.get(a, {}) for a in ids for b in ids if a != b):
                return False
        return True

    wait_for(formed, timeout, "cluster with bidirectional edges", 0.2)
    return ids


def instance_body(inst: dict[str, Any]) -> dict[str, Any]:
    return next(iter(inst.values()))


def wait_ready(node: EmuNode, iid: str, timeout: float = 90.0) -> dict[str, Any]:
    """Poll like exo's harness: every runner of the instance Ready (or Running); fail fast on RunnerFailed."""
    def ready() -> dict[str, Any] | None:
        s = node.state()
        inst = s["instances"].get(iid)
        if inst is None:
            return None
        runners = s["runners"]
        for rid in instance_body(inst)["shardAssignments"]["runnerToShard"]:
            st = runners.get(rid, {})
            assert "RunnerFailed" not in st, st
            if not ("RunnerReady" in st or "RunnerRunning" in st):
                return None
        return s

    return wait_for(ready, timeout, f"instance {iid} ready", 0.2)


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

"""Drive EXO emulator processes from Python: start one per node (own HOME, own address), talk to its
API, wait for a cluster or an instance, stop it by pid. Used by the emulator self-tests and by
`python -m scripts.measure_emulator`; knows nothing of pytest. Runs the emulator as
`python -m sandbox.exo_emulator` with the repository on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

SANDBOX = Path(__file__).resolve().parent
REPO = SANDBOX.parent
EMULATOR_MODULE = "sandbox.exo_emulator"
MODEL_ID = "modeldrop/tiny-llama-sbx"
FAST_TIMING = {"hello_s": 0.3, "election_s": 1.0, "edge_probe_s": 0.5, "master_plan_s": 1.0,
               "node_timeout_s": 4.0, "info_s": 0.3, "ring_retry_s": [0.2, 0.2, 0.2, 0.2, 0.2],
               "ring_connect_timeout_s": 0.5, "runner_backoff_s": [0.2, 0.5], "keepalive_s": 1.0}
# the interpreter that runs the emulator (default: this one; the sandbox node venv works too)
EMULATOR_PYTHON = os.environ.get("MODELDROP_EMULATOR_PYTHON", sys.executable)


def custom_card_toml(model_dir: Path, model_id: str = MODEL_ID) -> str:
    cfg = json.loads((model_dir / "config.json").read_text())
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    return (f'model_id = "{model_id}"\nn_layers = {cfg["num_hidden_layers"]}\nhidden_size = {cfg["hidden_size"]}\n'
            f'num_key_value_heads = {cfg["num_key_value_heads"]}\nsupports_tensor = false\n'
            f'tasks = ["TextGeneration"]\nfamily = "llama"\nquantization = ""\nbase_model = "Tiny Llama"\n'
            f'capabilities = ["text"]\ncontext_length = 4096\nbackends = ["MlxMetal", "MlxCuda", "MlxCpu"]\n'
            f'[storage_size]\nin_bytes = {size}\n')


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
        env.update({"HOME": str(self.home), "PYTHONPATH": str(REPO), "EXO_EMULATOR_CONFIG": str(self.config_path),
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
        """Start ``python -m sandbox.exo_emulator`` (or ``script``, an executable launcher) with ``flags``."""
        head = [str(script)] if script else [EMULATOR_PYTHON, "-m", EMULATOR_MODULE]
        args = [*head, "--api-port", str(self.api_port), *flags]
        self.proc = subprocess.Popen(args, env=self.env(env), stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "wb"), cwd=str(self.home))  # noqa: SIM115
        return self

    def run(self, *flags: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run to completion (for fatal-start and --help cases)."""
        return subprocess.run([EMULATOR_PYTHON, "-m", EMULATOR_MODULE, *flags], env=self.env(env),
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

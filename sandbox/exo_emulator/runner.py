"""The runner process (spawned per instance per node), like exo's ``worker/runner/runner.py``.

Contract: ``runner_main(conn, spec)`` runs in a ``spawn`` child. It obeys parent commands
(``connect``, ``load``, ``warmup``, ``generate``, ``shutdown``) in order and reports
``("status", <tagged RunnerStatus>)``, ``("log", level, msg, where)``, ``("prefill"|"token"|
"gen_done"|"gen_error", req_id, ...)``. Any exception during setup is reported as
``("fatal", type, msg, traceback)`` and the process exits with code 1 — the parent turns that
into ``RunnerFailed``. Rank 0 generates with real mlx-lm; other ranks load their node's files.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .ring import ring_connect

W_RUNNER = "exo.worker.runner.runner:main:125"
W_INIT = "exo.worker.engines.mlx.utils_mlx:mlx_distributed_init:180"


class Runner:
    def __init__(self, conn: Connection, spec: dict[str, Any]) -> None:
        self.conn, self.spec = conn, spec
        self.rank, self.world = spec["rank"], spec["world"]
        self.model: Any = None
        self.tokenizer: Any = None
        self.sockets: list[Any] = []
        self.t0 = time.time()

    def send(self, *msg: Any) -> None:
        self.conn.send(msg)

    def log(self, msg: str, level: str = "INFO", where: str = W_RUNNER) -> None:
        self.send("log", level, msg, where)

    def status(self, name: str, **body: Any) -> None:
        self.send("status", {name: body})

    # ---- lifecycle -----------------------------------------------------------------------------
    def connect(self) -> None:
        self.status("RunnerConnecting")
        hosts = [f"{h['ip']}:{h['port']}" for h in self.spec["hosts"]]
        path = os.path.join(tempfile.gettempdir(), f"exo_{os.getuid()}",
                            f"hosts_{self.spec['instance_id']}_{self.rank}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(hosts, f)
        self.log(f"Starting initialization for rank {self.rank}", where=W_INIT)
        self.log(f"rank {self.rank} hostfile: {path} hosts: {json.dumps(hosts, separators=(',', ':'))}", where=W_INIT)
        timing = self.spec["timing"]
        self.sockets = ring_connect(hosts, self.rank, self.spec["bind_addr"], timing["ring_retry_s"],
                                    timing["ring_connect_timeout_s"], self.spec.get("ring_connect_error"),
                                    debug=lambda m: self.log(m, "DEBUG", W_INIT))
        self.log(f"Rank {self.rank} mlx distributed initialization complete", where=W_INIT)
        self.status("RunnerConnected")

    def load(self, model_path: str) -> None:
        total = self.spec["end_layer"] - self.spec["start_layer"]
        self.status("RunnerLoading", layersLoaded=0, totalLayers=total)
        sig = self.spec.get("runner_killed_signal")
        if sig:  # fault: killed from outside while loading, as the OOM killer does
            import os
            os.kill(os.getpid(), int(sig))
        from mlx_lm.utils import load

        self.model, self.tokenizer = load(model_path)
        never = self.spec.get("runner_never_ready")
        for i in range(1, total + 1):
            if never == "loading" and i == max(1, total // 2):
                self.status("RunnerLoading", layersLoaded=i, totalLayers=total)
                while True:
                    time.sleep(3600)
            time.sleep(self.spec["timing"]["load_layer_s"])
            self.status("RunnerLoading", layersLoaded=i, totalLayers=total)
        self.status("RunnerLoaded")

    def warmup(self) -> None:
        self.status("RunnerWarmingUp")
        if self.spec.get("runner_never_ready") == "warmup":
            while True:
                time.sleep(3600)
        if self.rank == 0:
            for _ in self._stream([{"role": "user", "content": "warmup"}], 4, 0.0, 1.0, False):
                pass
        self.log(f"runner initialized in {time.time() - self.t0} seconds")
        self.log("runner ready")
        self.status("RunnerReady", **({"prefillServerPort": None} if self.spec["generation"] == "new" else {}))

    # ---- generation ------------------------------------------------------------------------------
    def _prompt(self, messages: list[dict[str, Any]], enable_thinking: bool | None = None) -> list[int]:
        """Chat-template tokens; ``enable_thinking`` (when not None) goes to the template like exo's."""
        msgs = [{"role": m.get("role", "user"), "content": _text(m.get("content"))} for m in messages]
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
            out = tok.apply_chat_template(msgs, add_generation_prompt=True, **extra)
            if isinstance(out, str):
                return tok.encode(out)
            return list(out)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant: "
        return tok.encode(text)

    def _stream(self, messages: list[dict[str, Any]], max_tokens: int, temperature: float, top_p: float,
                ban_eos: bool, seed: int | None = None, enable_thinking: bool | None = None):
        import mlx.core as mx
        from mlx_lm.generate import stream_generate
        from mlx_lm.sample_utils import make_sampler

        if seed is not None:
            mx.random.seed(seed)
        processors = []
        if ban_eos:
            eos = list(self.tokenizer.eos_token_ids)

            def ban(tokens: Any, logits: Any) -> Any:
                logits[..., eos] = -float("inf")
                return logits

            processors.append(ban)
        prompt = self._prompt(messages, enable_thinking)
        sampler = make_sampler(temp=temperature, top_p=top_p)
        yield from stream_generate(self.model, self.tokenizer, prompt, max_tokens=max_tokens, sampler=sampler,
                                   logits_processors=processors)

    def generate(self, req_id: str, p: dict[str, Any]) -> None:
        try:
            n_prompt = len(self._prompt(p["messages"], p.get("enable_thinking")))
            self.send("prefill", req_id, n_prompt, n_prompt)
            last = None
            for resp in self._stream(p["messages"], p["max_tokens"], p["temperature"], p["top_p"],
                                     p["bench"], p.get("seed"), p.get("enable_thinking")):
                last = resp
                self.send("token", req_id, resp.text, resp.token)
            stats = {"prompt_tokens": last.prompt_tokens if last else n_prompt,
                     "generation_tokens": last.generation_tokens if last else 0,
                     "prompt_tps": last.prompt_tps if last else 0.0,
                     "generation_tps": last.generation_tps if last else 0.0,
                     "peak_memory": int((last.peak_memory if last else 0) * 1e9),
                     "finish_reason": (last.finish_reason if last else "stop") or "stop"}
            self.send("gen_done", req_id, stats)
        except Exception as exc:  # noqa: BLE001
            self.send("gen_error", req_id, f"{type(exc).__name__}: {exc}")

    # ---- main loop -------------------------------------------------------------------------------
    def run(self) -> None:
        fast = "0" if os.environ.get("EXO_FAST_SYNCH", "").lower() == "false" else "1"
        self.log(f"Fast synch flag: {fast}", where="exo.worker.runner.bootstrap:entrypoint:60")
        self.log("hello from the runner")
        self.status("RunnerIdle")
        self.log("runner created")
        while True:
            try:
                cmd = self.conn.recv()
            except EOFError:
                return
            kind = cmd[0]
            if kind == "connect":
                self.connect()
            elif kind == "load":
                self.load(cmd[1])
            elif kind == "warmup":
                self.warmup()
            elif kind == "generate":
                self.generate(cmd[1], cmd[2])
            elif kind == "shutdown":
                return


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _redirect_stdio(log_dir: str | None) -> None:
    """NEW exo appends raw runner stdout/stderr to ``exo_log/runner_log/{stdout,stderr}.log``."""
    if not log_dir:
        return
    os.makedirs(log_dir, exist_ok=True)
    for fd, name in ((1, "stdout.log"), (2, "stderr.log")):
        target = os.open(os.path.join(log_dir, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)


def _watch_parent() -> None:
    """Exit when the node process goes away (a runner never outlives its exo)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def runner_main(conn: Connection, spec: dict[str, Any]) -> None:
    """Child-process entry point."""
    _redirect_stdio(spec.get("runner_log_dir"))
    _watch_parent()
    runner = Runner(conn, spec)
    try:
        runner.run()
    except BaseException as exc:  # noqa: BLE001 - every failure becomes RunnerFailed in the parent
        tb = "".join(traceback.format_exception(exc))
        try:
            runner.log(f"Runner {spec['runner_id']} crashed with critical exception {exc}", "ERROR",
                       "exo.worker.runner.bootstrap:entrypoint:94")
            runner.send("fatal", type(exc).__name__, str(exc), tb)
        except (OSError, EOFError):
            pass
        conn.close()
        os._exit(1)
    conn.close()
    os._exit(0)

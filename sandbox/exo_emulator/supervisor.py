"""Parent side of one runner process (exo's ``RunnerSupervisor``).

Contract: ``Supervisor.start()`` spawns the runner (multiprocessing ``spawn``); its status
messages are published as ``RunnerStatus`` events, its log records land in exo.log. When the
process exits non-zero the supervisor logs ``Runner terminated with exitcode=1\\nRunner error: ...``,
publishes ``RunnerFailed{errorMessage:"Terminated (exitcode=1\\nRunner error: <Type>: <msg>\\n<tb>)"}``
(v1.0.71: only ``"Terminated (exitcode=1)"``, the cause stays in the log)
and calls ``on_failed``. In-flight generations get an error.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

from .logs import logger
from .runner import runner_main

W_SUP = "exo.worker.runner.supervisor:_check_runner:399"


class Supervisor:
    def __init__(self, runner_id: str, instance_id: str, spec: dict[str, Any],
                 publish: Callable[[dict[str, Any]], None], on_failed: Callable[[Supervisor], None]) -> None:
        self.runner_id, self.instance_id, self.spec = runner_id, instance_id, spec
        self.publish, self.on_failed = publish, on_failed
        self.sent: set[str] = set()
        self.status: str = "RunnerIdle"
        self.fatal: tuple[str, str, str] | None = None
        self.streams: dict[str, queue.Queue] = {}
        self.stopping = False
        self.lock = threading.Lock()
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=runner_main, args=(child, spec), daemon=True)
        self._child = child

    def start(self) -> None:
        self.proc.start()
        self._child.close()
        threading.Thread(target=self._reader, name=f"runner-{self.runner_id[:8]}", daemon=True).start()

    def command(self, *cmd: Any) -> None:
        with self.lock:
            try:
                self.conn.send(cmd)
            except (OSError, ValueError):
                pass

    def _reader(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                break
            self._dispatch(msg)
        self.proc.join()
        self._exited()

    def _dispatch(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "status":
            self.status = next(iter(msg[1]))
            self.publish({"type": "RunnerStatus", "runnerId": self.runner_id, "status": msg[1]})
        elif kind == "log":
            logger.log(msg[1], msg[2], msg[3])
        elif kind == "fatal":
            self.fatal = (msg[1], msg[2], msg[3])
        elif kind in ("prefill", "token", "gen_done", "gen_error"):
            q = self.streams.get(msg[1])
            if q is not None:
                q.put((kind, *msg[2:]))

    def _exited(self) -> None:
        rc = self.proc.exitcode
        for q in list(self.streams.values()):
            q.put(("gen_error", f"Runner shutdown before completing command ({_cause(rc)})"))
        if self.stopping or rc == 0:
            return
        cause = short = _cause(rc)
        if self.fatal is not None:
            typ, msg, tb = self.fatal
            cause = f"{cause}\nRunner error: {typ}: {msg}\n{tb.rstrip()}"
        logger.error(f"Runner terminated with {cause}", W_SUP)
        self.status = "RunnerFailed"
        # HEAD puts the runner's error text in errorMessage; v1.0.71 only the exit cause (the rest is in the log)
        body: dict[str, Any] = {"errorMessage": f"Terminated ({cause if self.spec['generation'] == 'new' else short})"}
        if self.spec["generation"] == "new":
            body["diagnostics"] = []
        self.publish({"type": "RunnerStatus", "runnerId": self.runner_id, "status": {"RunnerFailed": body}})
        self.on_failed(self)

    def stop(self) -> None:
        """Shut the runner down (healthy shutdown: no RunnerFailed)."""
        self.stopping = True
        self.command("shutdown")
        self.proc.join(timeout=0.5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=1.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=2.0)

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()


def _cause(rc: int | None) -> str:
    if isinstance(rc, int) and rc < 0:
        try:
            return f"signal={-rc} ({signal.strsignal(-rc)})"
        except ValueError:
            return f"signal={-rc}"
    return f"exitcode={rc}"

"""The remote processes a run started and has not yet seen end, so every exit path can stop them.

Contract:
- `RemoteProcess(node, pid, what, needles)`: a process the run started on a node; `needles` are words its
  command line must still hold, each as a whole word, for it to be ours (the pid alone may have been reused).
- `REGISTRY.register(proc) -> token` when the pid is known, `REGISTRY.done(token)` when it ended normally.
  A process whose command line carries a nonce of ours (a probe's `modeldrop-probe <name> <nonce>`) is
  registered before it starts, with pid None, and `REGISTRY.identified(token, pid)` fills the pid in when the
  process reports it: stopped before that, it is looked up by its needles among the SSH user's processes
  (nothing else has that nonce), then stopped by pid like any other.
- `REGISTRY.drain(deadline_s)` stops every process still registered, by pid, after checking its identity
  with the `procs` probe (alive, command line holds every needle; its start time then goes to the `stop`
  probe, which checks it again before signalling), one thread per node, within one deadline; it returns one
  line per process ("node1 pid 123 (hf download …): stopped-term") and empties the registry. A process whose
  identity no longer matches is left alone and said so.
- `stop_one(token)` does the same for one process (a gate that gave up on its command); its line is kept until
  `take_stopped()` hands it over, so the ledger records the stops made mid-run too.
Nothing here knows pytest: the plugin records `take_stopped()` after each test and drains at session end (gate
failure, timeout, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from modeldrop.errors import NodeError
from modeldrop.probes import PID_TAG, is_nonce


class Node(Protocol):
    """What the cleanup needs of a node (`modeldrop.nodes.Node` is one): its name and its probes."""

    name: str

    def run_probe(self, name: str, args: dict, *, timeout: float = 60,
                  register: bool | None = None) -> dict[str, Any]: ...

DRAIN_DEADLINE_S = 90.0
STOP_PROBE_TIMEOUT_S = 60.0
STOP_BUDGET_S = 2 * STOP_PROBE_TIMEOUT_S  # stop_remote's worst case: the procs probe, then the stop probe


def parse_pid_line(line: str) -> int | None:
    """The pid from a `modeldrop-pid <pid>` line, else None."""
    words = line.strip().split()
    if len(words) == 2 and words[0] == PID_TAG and words[1].isdigit():
        return int(words[1])
    return None


@dataclass
class RemoteProcess:
    """One process the run started on a node."""

    node: Node
    pid: int | None
    what: str
    needles: tuple[str, ...] = ()
    registered: float = field(default_factory=time.time)

    def label(self) -> str:
        return f"{self.node.name} pid {'?' if self.pid is None else self.pid} ({self.what})"


def stop_remote(proc: RemoteProcess, grace_s: float = 10, timeout_s: float = STOP_PROBE_TIMEOUT_S) -> str:
    """Stop one registered process after checking it is still ours; returns what happened, one line."""
    if proc.pid is None:
        return _stop_unreported(proc, grace_s, timeout_s)
    try:
        found = proc.node.run_probe("procs", {"pids": [proc.pid], "exe_paths": None}, timeout=timeout_s,
                                    register=False)["procs"]
        if not found:
            return f"{proc.label()}: gone"
        info = found[0]
        words = list(info.get("cmdline") or [])
        line = " ".join(words)
        missing = [n for n in proc.needles if n not in words]
        if missing:
            return f"{proc.label()}: left alone: pid now runs {line[:120]!r} (not ours)"
        return f"{proc.label()}: {_stop_checked(proc.node, info, grace_s, timeout_s)}"
    except NodeError as exc:
        return f"{proc.label()}: could not stop: {exc}"


def _stop_unreported(proc: RemoteProcess, grace_s: float, timeout_s: float) -> str:
    """Stop a process registered before it reported its pid: found by its nonce-bearing needles among the SSH
    user's own processes (none found: it never started, or already ended)."""
    if not any(is_nonce(n) for n in proc.needles):
        return f"{proc.label()}: no pid reported and no nonce to find it by: left alone"
    try:
        found = proc.node.run_probe("procs", {"pids": None, "exe_paths": None, "own_only": True,
                                              "argv_has": list(proc.needles)}, timeout=timeout_s,
                                    register=False)["procs"]
        if not found:
            return f"{proc.label()}: gone (never reported a pid)"
        return "; ".join(f"{proc.node.name} pid {info['pid']} ({proc.what}): "
                         f"{_stop_checked(proc.node, info, grace_s, timeout_s)}" for info in found)
    except NodeError as exc:
        return f"{proc.label()}: could not stop: {exc}"


def _stop_checked(node: Node, info: dict[str, Any], grace_s: float, timeout_s: float) -> str:
    """The `stop` probe's result for the process `procs` described (it checks start time and argv0 again)."""
    argv0 = (info.get("cmdline") or [None])[0]
    res = node.run_probe("stop", {"pid": info["pid"], "expect_start": info.get("start"), "expect_argv0": argv0,
                                  "grace_s": grace_s}, timeout=timeout_s, register=False)
    return str(res["result"])


class CleanupRegistry:
    """Registered remote processes; see the module docstring."""

    def __init__(self) -> None:
        self._procs: dict[int, RemoteProcess] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopped: list[str] = []

    def register(self, proc: RemoteProcess) -> int:
        with self._lock:
            token = next(self._ids)
            self._procs[token] = proc
            return token

    def identified(self, token: int, pid: int) -> None:
        """The process registered before it started has reported its pid."""
        with self._lock:
            if token in self._procs:
                self._procs[token].pid = pid

    def done(self, token: int | None) -> None:
        """The process ended on its own: forget it."""
        with self._lock:
            self._procs.pop(token, None)

    def pending(self) -> list[RemoteProcess]:
        with self._lock:
            return list(self._procs.values())

    def stop_one(self, token: int | None) -> str | None:
        """Stop one registered process now (None when it is not registered); the line is also kept for
        `take_stopped`."""
        with self._lock:
            proc = self._procs.pop(token, None)
        if proc is None:
            return None
        line = stop_remote(proc)
        with self._lock:
            self._stopped.append(line)
        return line

    def take_stopped(self) -> list[str]:
        """The lines of the `stop_one` calls since the last take (then forgotten)."""
        with self._lock:
            lines, self._stopped = self._stopped, []
        return lines

    def drain(self, deadline_s: float = DRAIN_DEADLINE_S) -> list[str]:
        """Stop every registered process (see the module docstring); bounded by deadline_s."""
        with self._lock:
            procs, self._procs = list(self._procs.values()), {}
        by_node: dict[str, list[int]] = {}
        for i, p in enumerate(procs):
            by_node.setdefault(p.node.name, []).append(i)
        lines: dict[int, str] = {}

        def work(items: list[int]) -> None:
            for i in items:
                lines[i] = stop_remote(procs[i], timeout_s=max(5.0, deadline_s / 2))

        threads = [threading.Thread(target=work, args=(items,), daemon=True) for items in by_node.values()]
        for t in threads:
            t.start()
        end = time.monotonic() + deadline_s
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        done = dict(lines)
        return [done.get(i, f"{p.label()}: still stopping after {deadline_s:g}s") for i, p in enumerate(procs)]


REGISTRY = CleanupRegistry()

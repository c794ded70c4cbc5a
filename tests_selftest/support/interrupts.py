"""Interrupting a whole run: start it in its own process group, send a terminal's signals once something is
seen, wait until the nodes hold none of its processes, and record the signal-to-clean time as a matrix row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests_selftest.support import faultmatrix as fm
from tests_selftest.support.runs import REPO


def hf_running(sbx, k: int) -> list[int]:
    """Pids of node k's processes running `hf … download`."""
    return [pid for pid in sbx.node_pids(k) if "download" in (fm.cmdline(pid) or "")]


def record_row(row: fm.FaultRow, gate: str, clean_s: float, left: list, decoys: list, torn: int) -> None:
    """The matrix row of an interrupt: seconds from the signal until the nodes were clean."""
    row.caught_by, row.signature_seen, row.verdict_s = gate, True, round(clean_s, 1)
    row.downstream_run, row.procs_left, row.results_lost = 0, len(left), torn
    row.decoys_harmed = sum(1 for d in decoys if not d.alive())
    row.notes += left[:5]


def wait_until(check, proc: subprocess.Popen, what: str, deadline_s: float = 90):
    end = time.monotonic() + deadline_s
    while not (found := check()):
        assert proc.poll() is None, f"the run ended before {what}: {proc.stdout.read().decode()[-3000:]}"
        assert time.monotonic() < end, f"never saw {what}"
        time.sleep(0.1)
    return found


@dataclass
class Interrupted:
    """An interrupted run: what `ready()` found, the run's output, node processes left, signal-to-clean seconds."""

    found: Any
    output: str
    left: list
    clean_s: float


def interrupt_when(box, cmd: list[str], ready: Callable[[], Any], what: str, decoys: list, *,
                   signals: tuple[int, ...] = (signal.SIGINT,), deadline_s: float = 90, exit_s: float = 120) -> Interrupted:
    """Run `cmd` in its own process group and, once `ready()` finds something, send it `signals` as a terminal
    would (a human's 0.3 s apart); then wait for the run to end and the nodes to hold none of its processes."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found = wait_until(ready, proc, what, deadline_s)
        t0 = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.3)
            os.killpg(proc.pid, sig)
        output = proc.communicate(timeout=exit_s)[0].decode(errors="replace")
        left = fm.wait_no_node_processes(box, {d.proc.pid for d in decoys}, deadline_s=30)
        return Interrupted(found, output, left, time.monotonic() - t0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def record_measure(name: str, clean_s: float, test: str) -> None:
    """Print a MEASURE line and keep the figure for scripts/fault_matrix.py."""
    print(f"\nMEASURE {name}-to-clean: {clean_s:.1f}s")
    with open(fm.results_path(), "a") as f:
        f.write(json.dumps({"measure": f"{name}-to-clean s", "value": round(clean_s, 1), "test": test}) + "\n")

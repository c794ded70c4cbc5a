"""Interrupting a whole run: start it in its own process group, send a terminal's signals once something is
seen, wait until the nodes hold none of its processes, and record the signal-to-clean time as a matrix row."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests_selftest.support import faultmatrix as fm
from tests_selftest.support.runs import Run, start_run


def hf_running(sbx, k: int) -> list[int]:
    """Pids of node k's processes running `hf … download`."""
    return [pid for pid in sbx.node_pids(k) if "download" in (fm.cmdline(pid) or "")]


def record_row(row: fm.FaultRow, gate: str, clean_s: float, left: list, decoys: list, torn: int) -> None:
    """The matrix row of an interrupt: seconds from the signal until the nodes were clean."""
    row.caught_by, row.signature_seen, row.verdict_s = gate, True, round(clean_s, 1)
    row.downstream_run, row.procs_left, row.results_lost = 0, len(left), torn
    row.decoys_harmed = sum(1 for d in decoys if not d.alive())
    row.notes += left[:5]


def wait_until(check: Callable[[], Any], run: Run, what: str, deadline_s: float = 90) -> Any:
    """Poll `check()` until it finds something while the run goes (AssertionError if the run ends first or the
    deadline passes)."""
    end = time.monotonic() + deadline_s
    while not (found := check()):
        assert run.running(), f"the run ended before {what}: {run.output()[-3000:]}"
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


def interrupt_when(box, reports: Path, args: list[str], ready: Callable[[], Any], what: str, decoys: list, *,
                   signals: tuple[int, ...] = (signal.SIGINT,), deadline_s: float = 90,
                   exit_s: float = 120) -> Interrupted:
    """Start `pytest gates/ <args>` against `box` and, once `ready()` finds something, send the run's process group
    `signals` as a terminal would (a human's 0.3 s apart); then wait for the run to end and the nodes to hold none
    of its processes."""
    with start_run(["gates/"], Path(box.env_file), reports, *args) as run:
        found = wait_until(ready, run, what, deadline_s)
        t0 = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.3)
            run.send(sig)
        output = run.wait(exit_s).output
        left = fm.wait_no_node_processes(box, {d.proc.pid for d in decoys}, deadline_s=30)
        return Interrupted(found, output, left, time.monotonic() - t0)


def record_measure(name: str, clean_s: float, test: str) -> None:
    """Print a MEASURE line and keep the figure for scripts/fault_matrix.py."""
    print(f"\nMEASURE {name}-to-clean: {clean_s:.1f}s")
    with open(fm.results_path(), "a") as f:
        f.write(json.dumps({"measure": f"{name}-to-clean s", "value": round(clean_s, 1), "test": test}) + "\n")

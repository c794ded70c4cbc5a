"""Whole runs of the EXO gates against a cluster sandbox: the run windows, the run's launch records, whether
a recorded process still runs (pid and start time), stopping leftovers, signature ids from the ledger, and the
check that a fault was caught at its gate with nothing later run and nothing left behind."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from modeldrop.gatetable import gate_order
from tests_selftest.support.faultmatrix import proc_start_ticks
from tests_selftest.support.runs import RunResult, later_gates_not_run

WINDOWS = ["--cluster-window", "8", "--settle-window", "3", "--ready-timeout", "60"]
ORDER = gate_order(2)


def reset_nodes(sbx) -> None:
    """After a test: every node user's process stopped, EXO faults cleared, the sandbox up again."""
    for k in range(1, sbx.n_nodes + 1):
        sbx.stop_node_processes(k)
        sbx.set_exo_faults(k, {})
    sbx.up()


def launch_records(r: RunResult | Path) -> list[dict]:
    """The launch records of a run (pass the folder when a later run in the same report dir moved `latest`)."""
    folder = r if isinstance(r, Path) else r.run_folder()
    recs = [json.loads(p.read_text()) for p in sorted((folder / "exo").glob("node*-*.json"))]
    return [r for r in recs if "role" in r]  # not node<k>-<role>-existing-exo.json (what --stop-existing-exo listed)


def proc_start(pid: int) -> float | None:
    """Start time (epoch s) of a live pid, as the probes compute it; None when gone or a zombie."""
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return None
    btime = next(float(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime "))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def alive(rec: dict) -> bool:
    s = proc_start(rec["pid"])
    return s is not None and (rec.get("start") is None or abs(s - rec["start"]) <= 1.5)


def wait_gone(recs: list[dict], timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [r for r in recs if alive(r)]
        if not left:
            return []
        time.sleep(0.2)
    return [r for r in recs if alive(r)]


def stop_leftovers(recs: list[dict]) -> None:
    """Test cleanup only: TERM the process group of each launch record still alive (identity checked)."""
    import signal
    for rec in recs:
        if alive(rec):
            try:
                os.killpg(rec["pid"], signal.SIGTERM)
            except OSError:
                pass
    wait_gone(recs, 10.0)


def signature_ids(r: RunResult, gate: str) -> list[str]:
    out = []
    for line in (r.run_folder() / "ledger.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event") == "signature" and ev.get("gate") == gate:
            out += [s["id"] for s in ev.get("signatures") or []]
    return out


def assert_caught(r: RunResult, gate: str, sig: str | None) -> None:
    assert r.outcome(gate) == "failed", f"{gate}: {r.outcome(gate)}\n{r.output[-3000:]}"
    assert later_gates_not_run(r, gate, ORDER) == []
    if sig:  # a signature id, or text of the gate's message
        assert sig in signature_ids(r, gate) or sig in r.message(gate), (signature_ids(r, gate), r.message(gate))
    assert wait_gone(launch_records(r)) == [], "processes left behind after a failed run"

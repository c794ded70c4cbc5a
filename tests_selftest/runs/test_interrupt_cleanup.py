"""Ctrl-C (once or twice) and SIGTERM in the middle of a download: the run stops every remote process it
started (the node's `hf`), by pid after an identity check, the ledger says so, and the hand-off is current.

The hub's slow link keeps `hf download` running on node 1; the signal goes to the run's process group
as a terminal's Ctrl-C would. The time from the first signal until the nodes hold no process of the
run (decoys excepted) is the Ctrl-C-to-clean time, recorded for scripts/fault_matrix.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from modeldrop.exo.client import ExoClient
from tests_selftest.support import faultmatrix as fm
from tests_selftest.support.cluster_runs import WINDOWS, launch_records, reset_nodes
from tests_selftest.support.fault_plugin import _live_decoys
from tests_selftest.support.file_runs import FAST
from tests_selftest.support.interrupts import hf_running, interrupt_when, record_measure, record_row

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(300)]


@pytest.fixture
def cluster_box(sbx):
    """The cluster sandbox; faults cleared and leftovers of a failing test stopped afterwards."""
    yield sbx
    reset_nodes(sbx)


SIGNALS = {"ctrl-c": [signal.SIGINT], "ctrl-c-twice": [signal.SIGINT, signal.SIGINT], "sigterm": [signal.SIGTERM]}


@pytest.mark.parametrize("how", [
    pytest.param(h, marks=pytest.mark.fault(f"{h}-mid-download", gate="node1_download", signature="interrupted"))
    for h in SIGNALS])
def test_interrupt_mid_download_stops_the_remote_hf(clean, how, fault_row):
    sbx, reports = clean
    decoys = _live_decoys(sbx)
    sbx.hub.set_faults({"slow_link_bps": 40_000})  # the 1.6 MB model takes ~40 s
    run = interrupt_when(sbx, reports, FAST, lambda: hf_running(sbx, 1), "hf download running on node1", decoys,
                         signals=tuple(SIGNALS[how]))
    folder = (reports / "latest").resolve()
    events, torn = fm.ledger_events(folder)
    record_row(fault_row, "node1_download", run.clean_s, run.left, decoys, torn)
    assert run.left == [], (run.left, run.output[-3000:])
    assert all(d.alive() for d in decoys)
    assert torn == 0
    cleanup = [e for e in events if e.get("event") == "cleanup"]
    assert cleanup, run.output[-3000:]
    stopped = [line for e in cleanup for line in e.get("stopped", [])]
    # the registered process is the node-side supervisor of hf (its stop ends hf first): named after hf's work
    assert any(line.startswith("node1 pid ") and "(hf download " in line and "stopped" in line for line in stopped), \
        (run.found, stopped)
    assert events[-1]["event"] == "run_end" and events[-1]["interrupted"], events[-1]
    assert "INTERRUPTED in node1_download" in (folder / "handoff.md").read_text()
    record_measure(how, run.clean_s, f"interrupt[{how}]")


def instance_loading(reports: Path) -> bool:
    """The run is inside the placement gate's polling loop: the gate started and node 1's /state holds an instance."""
    folder = reports / "latest"
    if not folder.exists():
        return False
    folder = folder.resolve()
    events = fm.ledger_events(folder)[0]
    if not any(e.get("event") == "gate_start" and e.get("gate") == "placement" for e in events):
        return False
    node1 = [r for r in launch_records(folder) if r["node"] == 1 and r["role"] == "cluster"]
    try:
        return bool(node1) and bool(ExoClient(node1[0]["api_url"]).state().get("instances"))
    except Exception:  # noqa: BLE001 - the API is busy or not up yet: look again
        return False


@pytest.mark.fault("ctrl-c-in-placement", gate="placement", signature="interrupted")
def test_ctrl_c_while_the_cluster_loads_stops_every_exo(cluster_box, tmp_path, fault_row):
    """Ctrl-C in the placement gate (a runner that never gets ready): every exo the run started is stopped."""
    box = cluster_box
    decoys = _live_decoys(box)
    box.set_exo_faults(2, {"runner_never_ready": "loading"})
    reports = tmp_path / "reports"
    run = interrupt_when(box, reports, [*WINDOWS, "--ready-timeout", "300"], lambda: instance_loading(reports),
                         "the placement gate polling an instance", decoys, deadline_s=240, exit_s=180)
    folder = (reports / "latest").resolve()
    record_row(fault_row, "placement", run.clean_s, run.left, decoys, fm.ledger_events(folder)[1])
    assert run.left == [], (run.left, run.output[-3000:])
    assert all(d.alive() for d in decoys)
    teardown = json.loads((folder / "exo" / "teardown.json").read_text())
    assert teardown["reason"] == "interrupted" and len(teardown["stopped"]) >= 2, teardown
    assert "INTERRUPTED in placement" in (folder / "handoff.md").read_text()
    record_measure("ctrl-c-in-placement", run.clean_s, "interrupt[placement]")

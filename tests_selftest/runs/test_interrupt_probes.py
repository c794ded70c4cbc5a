"""A gate's limit and Ctrl-C in the middle of `--verify-hashes`: the node-side hashing probe (a python that
closing the SSH channel does not stop) is stopped by pid after its identity check, the ledger says so, and
the nodes hold no process of the run afterwards.

Node 1 holds a complete download whose first shard is grown to 1 TiB, sparse (no disk used), its mtime
kept so `hf download` keeps it: hashing it would take about an hour, so the probe is surely mid-file when
the fault lands. Whole runs against the sandbox's SSH nodes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests_selftest.support import faultmatrix as fm
from tests_selftest.support.fault_plugin import _live_decoys
from tests_selftest.support.file_runs import FAST, assert_caught, node_dir, run
from tests_selftest.support.interrupts import interrupt_when, record_measure, record_row

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(300)]
SPARSE_BYTES = 1 << 40
GATE_LIMIT_S = 10  # the verify gate's limit in the gate-timeout run: its manifest probe takes well under 1 s
STOPPED = re.compile(r"node1 pid (\d+) \(probe hashes\): stopped-(term|kill)")
# after a gate's limit the SSH channel closes first: the probe may end on the node by itself (its heartbeat finds the
# connection gone, probes/_watch.py) before the registry's stop reaches it
ENDED = re.compile(r"node1 pid (\d+) \(probe hashes\): (stopped-(term|kill)|gone)")


@pytest.fixture
def slow_hashing(clean):
    """(sandbox, report dir) with node 1's first shard grown to SPARSE_BYTES; node 1's files reset afterwards."""
    sbx, reports = clean
    sbx.populate_model(1)
    shard = sorted(node_dir(sbx, 1).glob("*.safetensors"))[0]
    st = shard.stat()
    os.truncate(shard, SPARSE_BYTES)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # hf's local-dir metadata still holds: it keeps the file
    yield sbx, reports
    sbx.reset_node_files(1)


def hashing_pids(sbx) -> list[int]:
    """Pids of node 1's processes running the hashes probe (by their command line) with the grown shard open:
    the probe is past its start (it reports its pid before it opens a file) and mid-file."""
    shard = str(sorted(node_dir(sbx, 1).glob("*.safetensors"))[0])
    return [pid for pid in sbx.node_pids(1) if "modeldrop-probe hashes" in (fm.cmdline(pid) or "")
            and shard in open_files(pid)]


def open_files(pid: int) -> list[str]:
    """The paths a process has open (empty when it is gone)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    out = []
    for fd in fds:
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return out


def cleanup_lines(folder: Path) -> tuple[list[str], list[dict]]:
    """The ledger's cleanup lines and all its events."""
    events, _ = fm.ledger_events(folder)
    return [line for e in events if e.get("event") == "cleanup" for line in e.get("stopped", [])], events


@pytest.mark.fault("gate-timeout-mid-hashing", gate="node1_verify", signature="Timeout", since="node1_verify",
                   window="-o")
def test_gate_timeout_mid_hashing_stops_the_remote_probe(slow_hashing):
    sbx, reports = slow_hashing
    result = run(sbx, reports, "--verify-hashes", "-o", f"modeldrop_gate_timeouts=verify={GATE_LIMIT_S}")
    assert_caught(result, "node1_verify", "Timeout")
    lines, events = cleanup_lines(result.run_folder())
    stopped = [m for m in map(ENDED.fullmatch, lines) if m]
    assert len(stopped) == 1, (lines, result.output[-3000:])
    assert hashing_pids(sbx) == []  # the fault matrix's recorder counts every node process left, decoys apart
    kinds = [e.get("event") for e in events]
    assert kinds.index("cleanup") < kinds.index("run_end")  # recorded when the gate ended, not only at exit


@pytest.mark.fault("ctrl-c-mid-hashing", gate="node1_verify", signature="interrupted")
def test_ctrl_c_mid_hashing_stops_the_remote_probe(slow_hashing, fault_row):
    sbx, reports = slow_hashing
    decoys = _live_decoys(sbx)
    run = interrupt_when(sbx, reports, [*FAST, "--verify-hashes"], lambda: hashing_pids(sbx),
                         "the hashes probe running on node1", decoys, deadline_s=180)
    folder = (reports / "latest").resolve()
    lines, events = cleanup_lines(folder)
    record_row(fault_row, "node1_verify", run.clean_s, run.left, decoys, fm.ledger_events(folder)[1])
    assert run.left == [], (run.left, run.output[-3000:])
    assert any(m and int(m.group(1)) in run.found for m in map(STOPPED.fullmatch, lines)), \
        (run.found, lines, run.output[-3000:])
    assert events[-1]["event"] == "run_end" and events[-1]["interrupted"], events[-1]
    assert "INTERRUPTED in node1_verify" in (folder / "handoff.md").read_text()
    record_measure("ctrl-c-mid-hashing", run.clean_s, "interrupt[hashing]")

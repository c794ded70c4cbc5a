"""The fault-matrix harness measures honestly: results lost, processes left, decoys, the caught gate and
the table; a marked test whose run leaks a process fails (the "must be 0" columns are asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scripts.fault_matrix import load_rows, table_lines
from tests_selftest.support import REPO
from tests_selftest.support import faultmatrix as fm


def test_results_lost_counts_torn_lines_missing_records_and_temp_files(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "ledger.jsonl").write_text(json.dumps({"t": 1, "event": "pass", "gate": "preflight"}) + "\n{torn\n")
    (folder / ".handoff.md.tmp").write_text("")
    outcomes = {"preflight": ("passed", ""), "node1_download": ("failed", "x"), "node1_verify": ("skipped", "")}
    lost, why = fm.results_lost(folder, outcomes)
    assert lost == 4, why  # node1_download unrecorded, a torn line, a temp file, no handoff.md
    (folder / "handoff.md").write_text("ok")
    (folder / ".handoff.md.tmp").unlink()
    (folder / "ledger.jsonl").write_text("".join(json.dumps({"t": 1, "event": e, "gate": g}) + "\n" for e, g in
                                                 (("pass", "preflight"), ("fail", "node1_download"))))
    assert fm.results_lost(folder, outcomes) == (0, [])


def test_verdict_seconds_from_the_onset_gate_and_the_first_failure():
    events = [{"t": 100.0, "event": "run_start"}, {"t": 103.0, "event": "gate_start", "gate": "startup"},
              {"t": 111.5, "event": "fail", "gate": "cluster"}]
    assert fm.verdict_seconds(events, "cluster", None) == 11.5
    assert fm.verdict_seconds(events, "cluster", "startup") == 8.5
    assert fm.first_failed({"preflight": ("passed", ""), "cluster": ("failed", "")}, ["preflight", "cluster"]) == \
        "cluster"
    assert fm.option_value(["--ready-timeout", "30", "--x"], "--ready-timeout") == "--ready-timeout 30"


class _Box:
    """A sandbox stand-in whose node 1 runs the given pids."""

    n_nodes = 1

    def __init__(self, pids):
        self.pids = pids

    def node_pids(self, k):
        return [p for p in self.pids if Path(f"/proc/{p}").exists()]


def test_processes_left_are_counted_until_they_go():
    leaked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        left = fm.wait_no_node_processes(_Box([leaked.pid]), set(), deadline_s=0.5)
        assert len(left) == 1 and f"pid {leaked.pid}" in left[0]
        assert fm.wait_no_node_processes(_Box([leaked.pid]), {leaked.pid}, deadline_s=0.5) == []
    finally:
        leaked.kill()
        leaked.wait()
    assert fm.wait_no_node_processes(_Box([leaked.pid]), set(), deadline_s=0.5) == []


def test_a_row_with_a_leak_is_a_violation_and_the_table_says_so(tmp_path):
    path = tmp_path / "rows.jsonl"
    ok = fm.FaultRow("hub-429", "node1_download", "429", "t::a", caught_by="node1_download", signature_seen=True,
                     verdict_s=4.0, downstream_run=0, procs_left=0, decoys_harmed=0, results_lost=0)
    leak = fm.FaultRow("ssh-refused", "preflight", "refused", "t::b", caught_by="preflight", signature_seen=True,
                       verdict_s=9.5, window="--x 3", downstream_run=0, procs_left=2, decoys_harmed=0,
                       results_lost=0)
    wrong = fm.FaultRow("isolated", "cluster", "A1", "t::c", caught_by="placement", signature_seen=False,
                        verdict_s=1.0, outcome="failed")
    either = fm.FaultRow("runner-gone", "placement", "F5|F8", "t::d", caught_by="placement", signature_seen=True,
                         signature_matched="F8", verdict_s=2.0)
    assert ok.violations() == [] and leak.violations() == ["procs_left=2"]
    for row in (ok, leak, wrong, either):
        row.append_to(path)
    lines = table_lines(load_rows(path))
    text = "\n".join(lines)
    assert "caught 3/4" in text and "placement [want cluster]" in text and "A1 (NOT SEEN)" in text
    assert any(line.startswith("runner-gone") and "  F8  " in line and "F5|F8" not in line for line in lines)
    assert "slowest fault-to-verdict: ssh-refused 9.5s (window --x 3" in text
    assert "procs_left: 2 in total" in text


def test_decoys_are_named_exo_and_run_another_program():
    import pwd
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="modeldrop-decoy-", dir="/var/tmp"))  # traversable by nobody

    class Box:
        n_nodes = 1

        def node(self, k):
            return type("N", (), {"exo_cmd": "/opt/exo/bin/exo"})()

        def node_user(self, k):
            return pwd.getpwuid(os.getuid()).pw_name

    Box.root = root
    os.chmod(root, 0o755)
    decoys = fm.start_decoys(Box())
    try:
        assert len(decoys) == 2 and all(d.alive() for d in decoys)
        for d in decoys:
            assert Path(f"/proc/{d.proc.pid}/comm").read_text().strip() == "exo"
            assert Path(f"/proc/{d.proc.pid}/cmdline").read_bytes().split(b"\0")[0] == b"/opt/exo/bin/exo"
            assert os.path.realpath(f"/proc/{d.proc.pid}/exe") != "/opt/exo/bin/exo"
        assert os.stat(f"/proc/{decoys[1].proc.pid}").st_uid == pwd.getpwnam("nobody").pw_uid
    finally:
        fm.stop_decoys(decoys)
        shutil.rmtree(root, ignore_errors=True)
    assert not any(d.alive() for d in decoys)


def test_a_decoy_dies_with_the_worker_that_started_it():
    code = ("import subprocess, sys; from tests_selftest.support import faultmatrix as fm; "
            "p = subprocess.Popen(['sleep', '60'], preexec_fn=fm._die_with_parent); print(p.pid, flush=True)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=REPO)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and fm.proc_start_ticks(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fm.proc_start_ticks(pid) is None, "the decoy outlived its worker"

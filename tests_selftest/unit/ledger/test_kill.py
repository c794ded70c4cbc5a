"""A run killed with SIGKILL in the middle of a gate leaves ledger.html, ledger.jsonl and handoff.md
readable and current; the hand-off names the gate that was running. Ctrl-C (SIGINT) likewise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests_selftest.support.plugin_kit import PYTEST, handoff_block, jsonl, latest, make_suite, subprocess_env

pytestmark = pytest.mark.timeout(120)


def start_run(pytester) -> subprocess.Popen:
    return subprocess.Popen([*PYTEST, "gates", "--model", "org/tiny-model", "--env-file", "test.env"],
                            cwd=pytester.path, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(path: Path, proc: subprocess.Popen, deadline_s: float = 60) -> None:
    """Poll until `path` exists (the gate signals it is inside its body) or the run ends."""
    end = time.monotonic() + deadline_s
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < end, "the gate never started"
        time.sleep(0.05)


def test_sigkill_mid_gate_leaves_a_current_ledger(pytester):
    make_suite(pytester, behaviour={"node2_download": "hang"})
    proc = start_run(pytester)
    wait_for(pytester.path / "hanging", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = latest(pytester)

    records = jsonl(folder)  # every line parses: nothing torn
    assert records[-1]["event"] in ("gate_start", "note", "evidence")
    starts = [r["gate"] for r in records if r["event"] == "gate_start"]
    assert starts[-1] == "node2_download"
    assert [r["gate"] for r in records if r["event"] == "pass"] == [
        "preflight", "node1_download", "node1_verify", "node1_canary"]

    text = (folder / "handoff.md").read_text()
    assert "RUNNING node2_download (phase 2)" in text
    block = handoff_block(folder)
    assert block["CURRENT_PHASE"] == "2 (node2_download)"
    assert block["LAST_PASS_PHASE"] == "1B (node1_canary)"
    assert block["NEXT_COMMAND"].endswith("--resume-bootstrap")

    run = json.loads((folder / "run.json").read_text())  # the machine-readable summary is current too
    assert run["gates"]["node2_download"]["outcome"] == "running" and run["finished"] is False
    assert run["gates"]["node1_canary"] == {**run["gates"]["node1_canary"], "outcome": "passed", "phase": "1B"}
    assert run["handoff"]["CURRENT_PHASE"] == "2 (node2_download)"

    html = (folder / "ledger.html").read_text()
    assert html.rstrip().endswith("</html>")
    blob = html.split('data-jsonblob="', 1)[1].split('"', 1)[0]
    assert "test_canary" in blob  # the rows of the gates that finished are there
    assert "CURRENT_PHASE: 2 (node2_download)" in html
    assert not list(folder.glob(".*.tmp"))


def test_ctrl_c_mid_gate_says_interrupted(pytester):
    make_suite(pytester, nodes="studio1", behaviour={"startup": "hang"})
    proc = start_run(pytester)
    wait_for(pytester.path / "hanging", proc)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 2
    folder = latest(pytester)
    end = jsonl(folder)[-1]
    assert end["event"] == "run_end" and end["interrupted"]
    assert "INTERRUPTED in startup" in (folder / "handoff.md").read_text()
    assert handoff_block(folder)["NEXT_COMMAND"].endswith("--resume-bootstrap")
    assert json.loads(json.dumps(end))["handoff"]["CURRENT_PHASE"] == "4 (startup)"

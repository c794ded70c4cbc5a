"""Node-side limits of remote work: the `tool` probe's timeout holds when its child leaves a process holding the
output pipe; long probes and `hf download` end by themselves on the node when their limit passes or the
controller's connection is gone, and are recorded on the node while they run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from modeldrop import probes
from modeldrop.config import NodeConfig
from modeldrop.download import CLEANUP_BUDGET_S, GATE_OVERHEAD_S, HF_DOWNLOAD_TIMEOUT_S, hf_limit_for_gate
from modeldrop.gatetable import BY_KIND
from modeldrop.hub import HUB_TIMEOUT_S
from modeldrop.nodes import NODE_SLACK_S, LocalNode
from modeldrop.preflight import check_node
from modeldrop.probes import _proc
from modeldrop.probes._watch import CHILD_GRACE_S
from tests_selftest.support import REPO

HEARTBEAT_S = probes.HEARTBEAT_S

pytestmark = pytest.mark.timeout(120)


def test_tool_timeout_is_bounded_when_a_grandchild_holds_the_pipe(tmp_path):
    """A tool that leaves a background child holding its stdout: the timeout still ends the probe within its limit
    plus a short grace, and the background child is stopped with it."""
    script = tmp_path / "lingers"
    script.write_text("#!/bin/sh\nsleep 30 &\necho $! > \"$0.pid\"\nsleep 30\n")
    script.chmod(0o755)
    t0 = time.monotonic()
    res = LocalNode("node1").run_probe("tool", {"path": str(script), "args": [], "timeout": 1}, timeout=60)
    took = time.monotonic() - t0
    assert res["error"] == "timed out after 1s" and took < 8, (took, res)
    bg = int((tmp_path / "lingers.pid").read_text())
    deadline = time.monotonic() + 5
    while _proc.proc_info(bg) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _proc.proc_info(bg) is None, "the tool's background child outlived the probe"


# -- node-side limits of long probes ----------------------------------------------------------------
CONTROLLER = """
import sys
from modeldrop.nodes import LocalNode
LocalNode("node1").run_probe("tool", {"path": "/bin/sleep", "args": ["120"], "timeout": 150}, timeout=180)
"""


def records(home: Path) -> list[dict]:
    folder = home / ".modeldrop" / "running"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def wait_for(check, what: str, deadline_s: float = 20.0):
    end = time.monotonic() + deadline_s
    while not (found := check()):
        assert time.monotonic() < end, f"never saw {what}"
        time.sleep(0.05)
    return found


def gone(pids: list[int]) -> bool:
    return all(_proc.proc_info(p) is None for p in pids)


def test_a_long_probe_ends_on_the_node_when_its_controller_is_killed(tmp_path):
    """The controller is SIGKILLed while a long probe runs (its `tool` child a sleep): the probe and its child end
    on their own within a heartbeat and the child's grace, and the record they kept on the node goes with them."""
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    ctl = subprocess.Popen([sys.executable, "-c", CONTROLLER], env=env, cwd=REPO, start_new_session=True)
    try:
        rec = wait_for(lambda: [r for r in records(tmp_path) if r["children"]], "the probe's record")[0]
        assert rec["what"] == "probe tool" and rec["deadline"] > time.time() + 100
        pids = [rec["pid"], rec["children"][0]["pid"]]
        assert not gone(pids)
        os.kill(ctl.pid, signal.SIGKILL)
        ctl.wait()
        t0 = time.monotonic()
        wait_for(lambda: gone(pids), "the probe and its child ending", HEARTBEAT_S + CHILD_GRACE_S + 10)
        took = time.monotonic() - t0
        print(f"\nMEASURE controller-killed-to-probe-gone: {took:.1f}s")
        assert records(tmp_path) == []
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()


def test_a_watched_probe_ends_at_its_node_side_limit(tmp_path):
    """Run by hand with a 1 s node-side limit (no controller deadline at all): the probe kills its child and
    exits 124 within the limit plus the child's grace."""
    args = {"path": "/bin/sleep", "args": ["60"], "timeout": 120,
            "_watch": probes.watch_spec(1.0, "probe tool", "run-x")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-"], input=probes.probe_payload("tool", args), capture_output=True,
                          env={**os.environ, "HOME": str(tmp_path)}, timeout=30)
    assert proc.returncode == 124 and time.monotonic() - t0 < 1 + CHILD_GRACE_S + 3, proc.stderr[-500:]
    assert records(tmp_path) == []


# -- what a crashed controller left: found at the next preflight -------------------------------------
def write_record(home: Path, pid: int, *, stale: bool, **fields) -> Path:
    info = _proc.proc_info(pid) or {}
    rec = {"pid": pid, "start": info.get("start"), "argv0": (info.get("cmdline") or [None])[0], "run_id": "run-old",
           "what": "hf download org/m", "deadline": time.time() + 3600, "heartbeat_s": 5.0, "children": [], **fields}
    folder = home / ".modeldrop" / "running"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    path.write_text(json.dumps(rec))
    if stale:
        os.utime(path, (time.time() - 600, time.time() - 600))
    return path


@pytest.fixture
def sleepers():
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        wait_for(lambda: (_proc.proc_info(p.pid) or {}).get("cmdline", [""])[-1:] == ["import time; time.sleep(120)"]
                 or None, "the sleeper")
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_preflight_stops_what_a_dead_controller_left_and_only_that(tmp_path, monkeypatch, sleepers):
    monkeypatch.setenv("HOME", str(tmp_path))
    orphan, live, reused, mine = sleepers(), sleepers(), sleepers(), sleepers()
    write_record(tmp_path, orphan.pid, stale=True)
    write_record(tmp_path, live.pid, stale=False, run_id="run-live")
    write_record(tmp_path, mine.pid, stale=True, run_id="run-now")  # this run's own work (another node, same user)
    write_record(tmp_path, reused.pid, stale=True, start=(_proc.proc_info(reused.pid)["start"] - 500))
    write_record(tmp_path, 999_999, stale=True, start=1.0)
    nc = NodeConfig(1, "node1", "local", str(tmp_path / "org--m"), "/bin/true", "/opt/exo", "~/logs")
    node = LocalNode("node1")
    node.run_id = "run-now"
    out = check_node(node, nc, SimpleNamespace(min_free_bytes=None, model_folder="org--m", sources={}), None)
    assert orphan.wait(15) is not None, out.warnings
    assert live.poll() is None and reused.poll() is None and mine.poll() is None
    assert len(out.warnings) == 2, out.warnings
    stopped = next(w for w in out.warnings if f"pid {orphan.pid} " in w)
    assert stopped.startswith("node1: pid") and "run-old" in stopped and "controller is gone" in stopped \
        and stopped.endswith("stopped-term"), stopped
    kept = next(w for w in out.warnings if f"pid {live.pid} " in w)
    assert "run-live" in kept and "left running" in kept
    assert sorted(r["pid"] for r in records(tmp_path)) == sorted([live.pid, mine.pid])


def test_the_download_limit_follows_the_gate_limit_the_operator_set(pytester, monkeypatch):
    """`modeldrop_gate_timeouts = download=28800` lengthens the gate and hf inside it (it was cut at a fixed 4 h)."""
    assert hf_limit_for_gate(None) == HF_DOWNLOAD_TIMEOUT_S
    assert hf_limit_for_gate(BY_KIND["download"].timeout_s) == HF_DOWNLOAD_TIMEOUT_S  # the table's default: 4 h
    assert GATE_OVERHEAD_S >= HUB_TIMEOUT_S + CLEANUP_BUDGET_S + NODE_SLACK_S  # what the gate spends besides hf
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeini("[pytest]\nmodeldrop_gate_timeouts =\n    download=28800\n")
    pytester.makepyfile(test_limit="def test_limit(hf_limit_s):\n    print('HF_LIMIT', hf_limit_s)\n")
    result = pytester.runpytest_subprocess("-p", "modeldrop.plugin", "-p", "fixtures.core", "-s", "-q",
                                           "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["HF_LIMIT 27900.0*"])
    assert 27900.0 > HF_DOWNLOAD_TIMEOUT_S

"""SIGKILL of the suite during each phase loses no completed result.

Gates: the fake gate suite (test_plugin_kit) hangs in one gate; the run is killed with SIGKILL; every
gate the terminal reported PASSED must have its pass in ledger.jsonl and in ledger.html, the hand-off
must name the running gate and the last pass, and no temp file is left. Benchmarks: `pytest benchmarks/`
against the calibration server is killed after a few cases; every case the terminal reported PASSED has
a complete checkpoint, and the rerun reuses exactly those.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modeldrop.gatetable import phase_of
from tests_selftest.support import REPO
from tests_selftest.support.bench_project import _project, server  # noqa: F401
from tests_selftest.support.plugin_kit import (
    FULL_ORDER_2,
    PYTEST,
    handoff_block,
    jsonl,
    latest,
    make_suite,
    subprocess_env,
)

pytestmark = pytest.mark.timeout(120)
PASSED = re.compile(r"::test_(\w+?)(?:\[(node\d+)\])? PASSED")


def wait_for(check, proc: subprocess.Popen, deadline_s: float = 60) -> None:
    """Poll check() until true; fail when the run ends first or the deadline passes."""
    end = time.monotonic() + deadline_s
    while not check():
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < end, "the kill point was never reached"
        time.sleep(0.05)


def kill(proc: subprocess.Popen) -> str:
    """SIGKILL the run's process group; returns what it printed."""
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    return out.decode(errors="replace")


def reported_passes(output: str) -> list[str]:
    """Gate ids the terminal reported PASSED (`test_nodek_verify[node2]` -> `node2_verify`)."""
    out = []
    for name, param in PASSED.findall(output):
        name = name.replace("nodek", param) if param else name
        out.append({"canary": "node1_canary"}.get(name, name))
    return out


@pytest.mark.parametrize("gate", FULL_ORDER_2)
def test_sigkill_in_each_gate_keeps_every_finished_result(pytester, gate):
    make_suite(pytester, behaviour={gate: "hang"})
    proc = subprocess.Popen([*PYTEST, "gates", "-v", "--model", "org/tiny-model", "--env-file", "test.env"],
                            cwd=pytester.path, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_for((pytester.path / "hanging").exists, proc)
    output = kill(proc)
    folder = latest(pytester)
    done = FULL_ORDER_2[:FULL_ORDER_2.index(gate)]
    assert reported_passes(output) == done, output[-2000:]
    records = jsonl(folder)  # every line parses
    assert [r["gate"] for r in records if r["event"] == "pass"] == done
    assert [r["gate"] for r in records if r["event"] == "gate_start"][-1] == gate
    block = handoff_block(folder)
    assert block["CURRENT_PHASE"] == f"{phase_of(gate)} ({gate})"
    assert block["LAST_PASS_PHASE"] == (f"{phase_of(done[-1])} ({done[-1]})" if done else "none")
    html = (folder / "ledger.html").read_text()
    assert html.rstrip().endswith("</html>")
    assert not list(folder.glob(".*.tmp"))


def test_sigkill_mid_benchmarks_keeps_every_finished_case(tmp_path: Path, server) -> None:  # noqa: F811
    reports, run = _project(tmp_path, server.url, server.model, "20260101T000000Z-calib--model", chat_pass=True)
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-v", "-p", "no:cacheprovider", "--bench-profile", "short"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    bench = run / "bench"
    wait_for(lambda: len(list(bench.glob("*.json"))) >= 3, proc)
    output = kill(proc)
    kept = {p.stem: json.loads(p.read_text()) for p in bench.glob("*.json")}  # each parses: none torn
    assert not list(bench.glob(".*.tmp"))
    passed = re.findall(r"::test_\w+\[([\w-]+)\] PASSED", output)
    assert passed and set(passed) <= set(kept), (passed, sorted(kept))
    assert all(c["summary"] for c in kept.values())

    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:]
    reused = re.findall(r"reused checkpoint", res.stdout)
    assert len(reused) >= len(kept), res.stdout[-3000:]

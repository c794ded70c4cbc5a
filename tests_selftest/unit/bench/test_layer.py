"""`pytest benchmarks/` end to end against the calibration server, with stub session fixtures.

The stubs stand in for the session fixtures of fixtures/core.py and the ledger (run_config,
run_folder, fingerprints, exo_api_urls); the chat pass is recorded with the real
modeldrop.ledger.passcache. This checks fixtures/bench.py and benchmarks/ alone: the chat-pass
gate, the liveness skip, parametrization, checkpoints, reuse on rerun, html extras and plots.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.calibration_server import CalibServer
from tests_selftest.support import REPO, bench_project
from tests_selftest.support.bench_project import _project

server = bench_project.server  # the calibration server (a module fixture)


def _pytest(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", "-rs",
                           "--bench-profile", "short", *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=600)


def test_benchmarks_skip_without_chat_pass(tmp_path: Path, server: CalibServer) -> None:
    _project(tmp_path, server.url, server.model, "20260101T000000Z-calib--model", chat_pass=False)
    res = _pytest(tmp_path, "-k", "concurrency")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 skipped" in res.stdout
    assert "chat-gate pass for the same fingerprint" in res.stdout
    assert not list((tmp_path / "reports").glob("*/bench/*.json"))


def test_benchmarks_skip_when_instance_gone(tmp_path: Path, server: CalibServer) -> None:
    _project(tmp_path, server.url, "other/model", "20260101T000000Z-other--model", chat_pass=True)
    res = _pytest(tmp_path, "-k", "concurrency")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no longer answers" in res.stdout and "No instance found for model other/model" in res.stdout


def _cases(run: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (run / "bench").glob("*.json")}


def test_benchmarks_run_checkpoint_reuse_and_report(tmp_path: Path, server: CalibServer) -> None:
    reports, run1 = _project(tmp_path, server.url, server.model, "20260101T000000Z-calib--model", chat_pass=True)
    html = tmp_path / "ledger.html"
    res = _pytest(tmp_path, f"--html={html}", "--self-contained-html")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "11 passed" in res.stdout
    # the heartbeat reached the terminal, with its UTC timestamp
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ bench token_sweep token_sweep-pp512-tg32 2/2", res.stdout, re.M)
    got = _cases(run1)
    assert len(got) == 11
    assert all(c["fingerprint"] == "fp-0001" and c["summary"]["errors"] == 0 and c["reused_from"] is None
               for c in got.values())
    arith = got["tasks-arithmetic"]["summary"]
    assert arith["pass_rate"] == 0 and "392" in arith["failures"][0]["answer"]
    assert got["tasks-exact_word"]["summary"]["pass_rate"] == 1
    assert got["thinking-on"]["summary"]["reasoning_tokens_est"]["p50"] == 6
    assert got["thinking-off"]["summary"]["reasoning_tokens_est"]["p50"] == 0
    assert {r["key"] for r in got["concurrency-c2"]["reference"]} == {"2"}
    page = html.read_text()
    assert "tasks-arithmetic summary" in page and "data:image/png;base64" in page
    assert sorted(p.name for p in (run1 / "plots").glob("*.png")) == [
        "concurrency_aggregate_tps.png", "concurrency_latency_cdf.png", "sweep_decode_tps.png", "sweep_ttft.png"]

    # a new run folder, same fingerprint: every case is reused from run 1, nothing is measured
    _, run2 = _project(tmp_path, server.url, server.model, "20260102T000000Z-calib--model", chat_pass=True)
    server.reset_log()
    res = _pytest(tmp_path)
    assert res.returncode == 0 and "11 passed" in res.stdout, res.stdout + res.stderr
    assert "reused checkpoint" in res.stdout
    reused = _cases(run2)
    assert len(reused) == 11 and all(str(run1) in c["reused_from"] for c in reused.values())
    assert [e for e in server.log() if e["stream"]] == []  # only liveness/probe (non-stream) requests went out

    # --rerun-benchmarks measures again, and regression is against run 1 (run 2 only reused)
    _, run3 = _project(tmp_path, server.url, server.model, "20260103T000000Z-calib--model", chat_pass=True)
    res = _pytest(tmp_path, "--rerun-benchmarks", "-k", "pp128")
    assert res.returncode == 0, res.stdout + res.stderr
    again = _cases(run3)["token_sweep-pp128-tg32"]
    assert again["reused_from"] is None
    assert {r["previous_run"] for r in again["regression"]} == {run1.name}
    # decode tok/s against run 1's own figure for the case: the change is the two measurements' (what
    # they are is the load's; the same server measured twice is not asserted to agree within a margin)
    decode = next(r for r in again["regression"] if r["metric"] == "decode_tps")
    first = got["token_sweep-pp128-tg32"]["figures"]["decode_tps"]
    assert (decode["previous"], decode["value"]) == (first, again["figures"]["decode_tps"])
    assert decode["change_pct"] == pytest.approx((decode["value"] / first - 1) * 100)

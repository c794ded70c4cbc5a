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
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldrop.ledger.passcache import PassCache
from sandbox.calibration_server import CalibServer

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = '''
import json
from pathlib import Path
from types import SimpleNamespace
import pytest

pytest_plugins = ["fixtures.bench"]
CFG = json.loads(Path(__file__).with_name("stub.json").read_text())

@pytest.fixture(scope="session")
def run_config():
    return SimpleNamespace(model_id=CFG["model"], nodes=[SimpleNamespace(index=1, name="local")],
                           exo_api_port=CFG["port"], report_dir=Path("relative/elsewhere"), profile=CFG["profile"])

@pytest.fixture(scope="session")
def run_folder():
    return SimpleNamespace(path=Path(CFG["run"]))

@pytest.fixture(scope="session")
def fingerprints():
    return SimpleNamespace(of=lambda gate: CFG["fingerprint"])

@pytest.fixture(scope="session")
def exo_api_urls():
    return [CFG["url"]]
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CalibServer]:
    from modeldrop.bench.tasks import TASKS

    answers = {t.prompt: t.example_answer for t in TASKS}
    answers[TASKS[1].prompt] = "It is 392."  # one wrong answer, to see failures quoted
    srv = CalibServer.start(answers=answers, answers_path=tmp_path_factory.mktemp("ans") / "answers.json",
                            defaults={"gap_ms": 4, "ttft_ms": 10, "reasoning": 6})
    yield srv
    srv.stop()


def _project(tmp: Path, srv_url: str, model: str, run_name: str, chat_pass: bool) -> tuple[Path, Path]:
    (tmp / "benchmarks").mkdir(exist_ok=True)
    for f in (ROOT / "benchmarks").glob("test_*.py"):
        shutil.copy(f, tmp / "benchmarks" / f.name)
    reports = tmp / "reports"
    run = reports / run_name
    run.mkdir(parents=True, exist_ok=True)
    (tmp / "conftest.py").write_text(CONFTEST)
    (tmp / "stub.json").write_text(json.dumps({
        "model": model, "port": int(srv_url.rsplit(":", 1)[1]), "reports": str(reports), "run": str(run),
        "url": srv_url, "fingerprint": "fp-0001",
        "profile": {"reference": {"decode_tps": {"128": 500.0}, "p95_latency_s": {"2": 0.1}}}}))
    cache = reports / "pass_cache.json"
    if cache.exists():
        cache.unlink()
    PassCache(cache).record("chat", "fp-0001" if chat_pass else "fp-other", run_id="earlier-run")
    return reports, run


def _pytest(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
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
    assert abs(next(r for r in again["regression"] if r["metric"] == "decode_tps")["change_pct"]) < 5

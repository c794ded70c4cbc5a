"""A `pytest benchmarks/` project against the calibration server, with stub session fixtures (conftest in
CONFTEST): the benchmark layer's tests and the SIGKILL-in-benchmarks test build it with `_project`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldrop.ledger.passcache import PassCache
from sandbox.calibration_server import CalibServer
from tests_selftest.support import REPO

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
    for f in (REPO / "benchmarks").glob("test_*.py"):
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

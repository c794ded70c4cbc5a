"""Every wait bounded, limits nested: the alarm context, gate limits above their inner waits, and fixture
setup / teardown (outside pytest-timeout's reach) bounded in a whole fake gate run."""

from __future__ import annotations

import subprocess
import time

import pytest

from modeldrop import deadlines
from modeldrop.deadlines import DeadlineExceeded, alarm
from tests_selftest.support.plugin_kit import PYTEST, jsonl, latest, make_suite, subprocess_env

BASE = ("gates", "--model", "org/tiny-model", "--env-file", "test.env", "-p", "no:cacheprovider")


def test_alarm_fires_and_restores_an_enclosing_one():
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="outer still running after 1s"):
        with alarm(1.0, "outer"):
            with alarm(0.2, "inner"):
                with pytest.raises(DeadlineExceeded, match="inner still running after 0.2s"):
                    time.sleep(5)
            time.sleep(5)  # the outer alarm was put back with what it had left
    assert time.monotonic() - t0 < 2.0


def test_alarm_leaves_a_tighter_outer_limit_alone():
    with pytest.raises(DeadlineExceeded, match="outer"):
        with alarm(0.3, "outer"):
            with alarm(10, "inner"):
                time.sleep(5)


def test_teardown_limit_leaves_a_full_cluster_stop_its_time():
    from modeldrop.cleanup import DRAIN_DEADLINE_S
    assert deadlines.TEARDOWN_S >= 2 * deadlines.MAX_NODES * (deadlines.STOP_GRACE_S + deadlines.PROBE_TIMEOUT_S)
    assert deadlines.TEARDOWN_S > DRAIN_DEADLINE_S  # the drain runs inside the session-teardown limit


HANGING_FIXTURES = '''
import json
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def slow_world():
    b = json.loads((ROOT / "behaviour.json").read_text())
    if b.get("setup") == "hang":
        threading.Event().wait()
    yield
    if b.get("teardown") == "hang":
        threading.Event().wait()
'''


@pytest.mark.parametrize("phase", ["setup", "teardown"])
def test_a_hanging_fixture_is_cut_at_its_limit(pytester, phase):
    make_suite(pytester, nodes="studio1", behaviour={phase: "hang"})
    (pytester.path / "gates" / "conftest.py").write_text(HANGING_FIXTURES)
    # only the hanging phase gets a 1 s limit: the session teardown after a cut setup also writes ledger.html and
    # draws the timeline (together able to pass 1 s on a busy machine) and must not be cut for that
    setup_s, teardown_s = (1, 60) if phase == "setup" else (60, 1)
    pytester.makeini(f"[pytest]\nmodeldrop_fixture_timeout = {setup_s}\nmodeldrop_teardown_timeout = {teardown_s}\n")
    result = subprocess.run([*PYTEST, *BASE], cwd=pytester.path, env=subprocess_env(), capture_output=True,
                            text=True, timeout=150)  # a fixture left hanging would hit this
    text = result.stdout + result.stderr
    what = "setup of fixture slow_world" if phase == "setup" else "teardown after test_chat"
    assert f"{what} still running after 1s" in text, text[-3000:]
    assert result.returncode == 1
    events = jsonl(latest(pytester))
    kinds = [e["event"] for e in events]
    assert "run_end" in kinds  # the ledger was closed
    # the 1 s limit also bounds the session teardown (ledger.html, the timeline): on a loaded machine it may overrun,
    # which is said after run_end, never swallowed
    late = events[kinds.index("run_end") + 1:]
    assert all("session teardown still running" in str(e.get("text")) for e in late), late


def test_benchmark_items_get_a_timeout(pytester):
    make_suite(pytester, nodes="studio1")
    pytester.makepyfile(**{"gates/test_d_bench": '''
import pytest

@pytest.mark.bench("sweep")
def test_case(request):
    from modeldrop.deadlines import BENCH_CASE_TIMEOUT_S
    assert request.node.get_closest_marker("timeout").args[0] == BENCH_CASE_TIMEOUT_S
'''})
    result = pytester.runpytest(*BASE, "-k", "test_case")
    result.assert_outcomes(passed=1)

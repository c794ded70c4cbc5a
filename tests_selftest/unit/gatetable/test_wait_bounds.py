"""Limits end the work they bound: a local command's timeout covers the readers of its output (a background
child holding the pipe), and a setup/teardown limit is never swallowed by an evidence collector or a poll."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from modeldrop.deadlines import DeadlineExceeded, alarm
from modeldrop.errors import CommandTimeout
from modeldrop.exo.wait import call_safely, poll
from modeldrop.nodes import LocalNode
from tests_selftest.support.plugin_kit import PYTEST, make_suite, subprocess_env

pytestmark = pytest.mark.timeout(120)
SLACK_S = 1.5


def _gone(pid: int, within_s: float = 5.0) -> bool:
    """Poll until pid is no longer a live process (a zombie counts as gone)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_local_timeout_covers_a_background_child_holding_the_pipe():
    node = LocalNode("node1")
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as exc:
        node.run(["/bin/sh", "-c", "sleep 30 & echo $!"], timeout=2)
    took = time.monotonic() - t0
    assert took < 2 + SLACK_S, took
    assert "\n" not in str(exc.value) and "node1" in str(exc.value) and "timed out after 2s" in str(exc.value)
    child = int(exc.value.partial.split()[0])
    assert _gone(child), f"the background sleep {child} of the timed-out command still runs"


def test_local_command_that_ends_in_time_is_unchanged():
    res = LocalNode("node1").run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], timeout=5)
    assert (res.rc, res.stdout, res.stderr) == (3, "out\n", "err\n")


def test_a_limit_is_not_swallowed_by_call_safely():
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="teardown still running after 0.3s"):
        with alarm(0.3, "teardown"):
            value, err = call_safely(lambda: time.sleep(5))
            time.sleep(5)  # the old behaviour: the collector said "DeadlineExceeded: …" and the teardown went on
    assert time.monotonic() - t0 < 0.3 + SLACK_S


def test_a_limit_is_not_swallowed_by_a_poll():
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        with alarm(0.3, "teardown"):
            poll(lambda: time.sleep(5), lambda v: False, timeout_s=10, interval_s=0.05)  # the limit fires inside fn
    assert time.monotonic() - t0 < 0.3 + SLACK_S


POLLING_TEARDOWN = '''
import time

import pytest

from modeldrop.exo.wait import call_safely, poll


@pytest.fixture(scope="session", autouse=True)
def slow_stop():
    yield
    # a stop that polls a wedged node through an evidence collector, then records that it went on
    poll(lambda: call_safely(lambda: time.sleep(30)), lambda v: False, timeout_s=60, interval_s=0.1)
    open("after-the-poll", "w").close()
'''


def test_teardown_limit_ends_a_polling_teardown(pytester):
    make_suite(pytester, nodes="studio1")
    (pytester.path / "gates" / "conftest.py").write_text(POLLING_TEARDOWN)
    pytester.makeini("[pytest]\nmodeldrop_teardown_timeout = 2\n")
    t0 = time.monotonic()
    result = subprocess.run([*PYTEST, "gates", "--model", "org/tiny-model", "--env-file", "test.env", "-p",
                             "no:cacheprovider"], cwd=pytester.path, env=subprocess_env(), capture_output=True,
                            text=True, timeout=100)
    took = time.monotonic() - t0
    text = result.stdout + result.stderr
    assert "still running after 2s" in text, text[-3000:]
    assert took < 40, took  # the poll alone would take 60 s
    assert not os.path.exists(pytester.path / "after-the-poll")
    assert "Traceback" not in text, text[-3000:]

"""Wait and retry of a node's download: the real `hf` against the sandbox hub's fault switches (a 500 the first N
times, then healthy; a 500 every time; a repository that is not there), and a stand-in hf for the markers a run
leaves (hf exits 0 but leaves its own `.incomplete`; an earlier run's orphan is left to the verify gate)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from modeldrop.download import Attempt, DownloadPlan, download_verdict, run_download
from modeldrop.nodes import LocalNode
from tests_selftest.support.hub_fixture import hub  # noqa: F401 - fixture

HF = str(Path(sys.executable).parent / "hf")
pytestmark = pytest.mark.timeout(240)


def _plan(hub, tmp_path, name: str, **kw) -> DownloadPlan:  # noqa: F811
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hfhome"), "HF_HUB_DISABLE_XET": "1"}
    kw.setdefault("attempts", 3)
    kw.setdefault("backoff_s", 0.2)
    return DownloadPlan(HF, hub.repo, str(tmp_path / name / "modeldrop--unit-model"), env=env, timeout_s=180,
                        interval_s=5, **kw)


def _run(plan: DownloadPlan, cancel: threading.Event | None = None):
    lines: list[str] = []
    attempts: list[Attempt] = []
    res = run_download(LocalNode("node1", python_cmd="/usr/bin/python3"), plan, lines.append,
                       on_attempt=attempts.append, cancel=cancel)
    return res, lines, attempts


@pytest.mark.fault("hub-500-then-healthy", gate="node1_download", signature="attempt 3 of 3 succeeded")
def test_a_hub_failing_twice_is_waited_for_and_the_third_attempt_passes(hub, tmp_path):  # noqa: F811
    hub.handle.set_faults(server_error_500={"scope": "revision", "times": 2})
    try:
        res, lines, attempts = _run(_plan(hub, tmp_path, "ok"))
    finally:
        hub.handle.clear_faults()
    assert res.rc == 0 and [a.n for a in attempts] == [1, 2, 3], (lines, res.stderr_tail)
    assert [a.cause is None for a in attempts] == [False, False, True]
    assert "500" in attempts[0].cause and attempts[0].retry_in_s == 0.2 and attempts[1].retry_in_s == 0.4
    failed = [ln for ln in lines if " failed (rc " in ln]
    assert len(failed) == 2 and failed[0].startswith("node1 download: attempt 1 of 3 failed (rc 1) after ")
    assert "next attempt in 0.2s (hf resumes what it has)" in failed[0], failed
    assert "node1 download: attempt 3 of 3" in lines and lines[-1].startswith("node1 download: attempt 3 of 3 "
                                                                              "succeeded")
    assert download_verdict(1, _plan(hub, tmp_path, "ok"), res).ok
    assert res.attempts == attempts and res.heartbeats == lines


@pytest.mark.fault("hub-500-always", gate="node1_download", signature="failed after 3 attempts")
def test_a_hub_that_keeps_failing_fails_the_gate_with_every_attempts_cause(hub, tmp_path):  # noqa: F811
    hub.handle.set_faults(server_error_500={"scope": "revision"})
    t0 = time.monotonic()
    try:
        plan = _plan(hub, tmp_path, "bad")
        res, lines, attempts = _run(plan)
    finally:
        hub.handle.clear_faults()
    assert res.rc != 0 and len(attempts) == 3 and all(a.cause and "500" in a.cause for a in attempts), lines
    assert attempts[-1].retry_in_s is None and attempts[-1].why_not_retried == "no attempt left"
    verdict = download_verdict(1, plan, res)
    assert not verdict.ok and verdict.summary.startswith(f"node1: hf download {hub.repo} into {plan.local_dir} "
                                                         "failed after 3 attempts: attempts 1, 2, 3 (rc 1): ")
    assert "500" in verdict.summary and "\n" not in verdict.summary
    assert verdict.problems[0].startswith("node1 hf download failed 3 of 3 attempts: ")
    assert time.monotonic() - t0 < 120


def test_a_repository_that_is_not_there_is_not_retried(hub, tmp_path):  # noqa: F811
    plan = _plan(hub, tmp_path, "none")
    res, lines, attempts = _run(DownloadPlan(**{**plan.__dict__, "model_id": "nobody/nothing"}))
    assert len(attempts) == 1 and res.rc != 0 and "not found" in (attempts[0].cause or "").lower()
    assert lines[-1].endswith("not retried: the hub's answer will not change"), lines


def _fake_hf(tmp_path: Path, script: str) -> str:
    hf = tmp_path / "fake-hf"
    hf.write_text("#!/bin/sh\n" + script)
    hf.chmod(0o755)
    return str(hf)


def test_a_marker_this_run_left_is_retried_an_earlier_runs_orphan_is_not(tmp_path):
    """hf exits 0 but leaves its own .incomplete: the next attempt (hf resumes) clears it. An orphan that was there
    before the first attempt and is untouched is not this run's: no retry, the verify gate reports it."""
    d = tmp_path / "m" / "org--m"
    marker = d / ".cache/huggingface/download/shard.safetensors.abc.incomplete"
    count = tmp_path / "runs"
    hf = _fake_hf(tmp_path, f"""echo run >> {count}
if [ "$(wc -l < {count})" -eq 1 ]; then mkdir -p {marker.parent}; echo part > {marker}; else rm -f {marker}; fi
exit 0
""")
    node = LocalNode("node1", python_cmd="/usr/bin/python3")
    plan = DownloadPlan(hf, "org/m", str(d), timeout_s=120, interval_s=5, attempts=3, backoff_s=0.1)
    lines: list[str] = []
    res = run_download(node, plan, lines.append)
    assert [a.cause is None for a in res.attempts] == [False, True], lines
    assert "left 1 partial-download marker(s): .cache/huggingface/download/shard.safetensors.abc.incomplete" in \
        res.attempts[0].cause and res.markers_left == [] and download_verdict(1, plan, res).ok

    orphan = d / ".cache/huggingface/download/old.safetensors.def.incomplete"
    orphan.write_text("from an earlier run")
    count.unlink()
    (tmp_path / "runs").write_text("run\n")  # the stand-in now leaves nothing: only the orphan is there
    res = run_download(node, plan, lines.append)
    assert len(res.attempts) == 1 and res.attempts[0].cause is None and download_verdict(1, plan, res).ok


def test_a_marker_left_every_time_fails_the_gate_naming_it(tmp_path):
    d = tmp_path / "m" / "org--m"
    marker = d / "weights.safetensors.part"
    hf = _fake_hf(tmp_path, f"mkdir -p {d}; date +%s%N > {marker}; exit 0\n")
    plan = DownloadPlan(hf, "org/m", str(d), timeout_s=120, interval_s=5, attempts=2, backoff_s=0.1)
    res = run_download(LocalNode("node1", python_cmd="/usr/bin/python3"), plan, lambda _l: None)
    verdict = download_verdict(1, plan, res)
    assert res.rc == 0 and res.markers_left == ["weights.safetensors.part"] and not verdict.ok
    assert "failed after 2 attempts: attempts 1, 2 (rc 0): hf exited 0 but left 1 partial-download marker(s): " \
           "weights.safetensors.part" in verdict.summary, verdict.summary


def test_a_download_being_stopped_is_not_retried_and_its_wait_ends_at_once(tmp_path):
    hf = _fake_hf(tmp_path, "echo 'Error: 503 Service Unavailable' >&2; exit 1\n")
    plan = DownloadPlan(hf, "org/m", str(tmp_path / "m" / "org--m"), timeout_s=300, interval_s=5, attempts=3,
                        backoff_s=60)
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    t0 = time.monotonic()
    res, lines, attempts = _run(plan, cancel)
    assert time.monotonic() - t0 < 30 and len(attempts) == 1 and attempts[0].retry_in_s == 60, lines
    assert "503 Service Unavailable" in attempts[0].cause


@pytest.mark.parametrize(("reason", "retried"), [
    ("Local entry not found. Server error '500 Internal Server Error' for url 'http://h/api/models/o/n/revision/main'",
     True),
    ("429 Too Many Requests for url 'http://h/api/models/o/n'", True),
    ("no new byte under /m for 180s (stall window 180s): the hub at http://h stopped answering", True),
    ("ConnectionError: Connection reset by peer", True),
    ("Model 'nobody/nothing' not found. If the repo is private, make sure you are authenticated", False),
    ("File not found in model 'o/n'. URL: http://h/o/n/resolve/abc/model-00002-of-00003.safetensors", False),
    ("Repository Not Found for url: http://h/api/models/a/b.", False),
    ("Revision Not Found for url: http://h/api/models/a/b/revision/v9.", False),
    ("You are trying to access a gated repo.", False),
    ("No space left on device", False),
])
def test_which_failures_are_worth_another_attempt(reason, retried):
    from modeldrop.download import DownloadResult, not_retried

    assert (not_retried(DownloadResult(1, None, "", "", 1.0, reason)) is None) == retried
    spent = DownloadResult(124, None, "", "", 1.0, "x", timed_out=True)
    assert not_retried(spent) == "not retried: hf's limit is spent"
    assert not_retried(DownloadResult(127, None, "", "sh: hf: not found", 1.0, None)) is not None


def test_the_retry_and_verify_see_the_same_markers():
    from modeldrop.probes import dirsize, manifest

    assert dirsize.MARKER_SUFFIXES == manifest.MARKER_SUFFIXES

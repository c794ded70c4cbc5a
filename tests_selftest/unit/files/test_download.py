"""run_hf_download with the real `hf` CLI against the sandbox hub: success + heartbeats, the verify
verdict afterwards, and the hub's reason on failure."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from modeldrop.audit import completeness
from modeldrop.download import STALL_RC, DownloadPlan, hf_download_argv, hub_reason, progress_line, run_hf_download
from modeldrop.hub import expected_from_cache, expected_online
from modeldrop.nodes import LocalNode
from tests_selftest.support.hub_fixture import hub  # noqa: F401 - fixture

HF = str(Path(sys.executable).parent / "hf")
pytestmark = pytest.mark.timeout(180)


def _env(hub, tmp_path):  # noqa: F811
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hfhome"), "HF_HUB_DISABLE_XET": "1",
            "HF_TOKEN": "hf_unit_secret_token"}


def test_download_with_heartbeats_then_verify(hub, tmp_path):  # noqa: F811
    node = LocalNode("node1", python_cmd="/usr/bin/python3")
    hub.handle.set_faults(slow_link_bps=4 * 1024 * 1024)
    try:
        exp = expected_online(hub.repo, endpoint=hub.url)
        beats: list[str] = []
        d = tmp_path / "models" / "modeldrop--unit-model"
        plan = DownloadPlan(HF, hub.repo, str(d), env=_env(hub, tmp_path), timeout_s=120,
                            expected_bytes=exp.total_size, interval_s=0.4)
        res = run_hf_download(node, plan, beats.append)
    finally:
        hub.handle.clear_faults()
    assert res.rc == 0, res.stderr_tail
    assert res.reported_path == str(d) and res.hub_reason is None and not res.timed_out
    progress = [b for b in beats if b.startswith("node1 download: ") and " MiB / " in b]
    assert progress and "%)" in progress[-1] and "MiB/s, ETA " in progress[-1], beats
    assert "hf_unit_secret_token" not in repr(node.transcript)
    m = node.run_probe("manifest", {"path": str(d), "model_folder": d.name})
    assert completeness(m, exp).ok
    assert completeness(m, expected_from_cache(m)).ok


def test_download_failure_gives_hub_reason(hub, tmp_path):  # noqa: F811
    node = LocalNode("node1", python_cmd="/usr/bin/python3")
    plan = DownloadPlan(HF, "nobody/nothing", str(tmp_path / "x"), env=_env(hub, tmp_path), timeout_s=60,
                        interval_s=5)
    res = run_hf_download(node, plan, lambda s: None)
    assert res.rc != 0 and res.hub_reason and "not found" in res.hub_reason.lower(), (res.hub_reason, res.stderr_tail)


def test_download_429_on_empty_dir(hub, tmp_path):  # noqa: F811
    node = LocalNode("node1", python_cmd="/usr/bin/python3")
    hub.handle.set_faults(rate_limit_429={"scope": "revision"})
    try:
        plan = DownloadPlan(HF, hub.repo, str(tmp_path / "y"), env=_env(hub, tmp_path), timeout_s=60)
        res = run_hf_download(node, plan, lambda s: None)
    finally:
        hub.handle.clear_faults()
    assert res.rc == 1 and "429" in (res.hub_reason or ""), (res.hub_reason, res.stderr_tail)


def test_timeout_stops_the_download(hub, tmp_path):  # noqa: F811
    node = LocalNode("node1", python_cmd="/usr/bin/python3")
    hub.handle.set_faults(slow_link_bps=64 * 1024)
    try:
        plan = DownloadPlan(HF, hub.repo, str(tmp_path / "z"), env=_env(hub, tmp_path), timeout_s=3, interval_s=1)
        res = run_hf_download(node, plan, lambda s: None)
    finally:
        hub.handle.clear_faults()
    assert res.timed_out and res.rc == 124 and "timed out after 3s" in res.hub_reason


def test_pure_helpers():
    assert hf_download_argv("hf", "o/n", "/d", ["*.json"], "main") == [
        "hf", "download", "o/n", "--local-dir=/d", "--include=*.json", "--revision=main", "--format", "json"]
    assert hf_download_argv("hf", "o/n", "/d", ["-x"], "-r")[3:6] == ["--local-dir=/d", "--include=-x", "--revision=-r"]
    assert progress_line("node1", 12 * 2**20, int(34.5 * 2**20), 4.1 * 2**20, 5) == \
        "node1 download: 12.0 MiB / 34.5 MiB (35%), 4.1 MiB/s, ETA 0:05"
    assert progress_line("node2", 2**20, None, 2**19, None) == "node2 download: 1.0 MiB, 0.5 MiB/s"
    assert hub_reason("x\nError: Repository Not Found for url: http://h/api/models/a/b.\nHint: set HF_DEBUG=1\n") == \
        "Repository Not Found for url: http://h/api/models/a/b."
    assert hub_reason("Traceback (most recent call last):\n  File x\nOSError: [Errno 28] No space left on device\n") \
        == "No space left on device"
    assert hub_reason("all good\n") is None


def test_progress_cadence_is_not_stretched_by_the_probe_round_trip():
    """Heartbeats come every interval_s, not every interval_s + the dirsize round trip (README: at least every 10 s)."""
    import itertools
    import threading
    import time

    from modeldrop.download import _Progress

    class SlowNode:
        name = "node1"

        def run_probe(self, name, args, *, timeout):
            time.sleep(0.25)  # a slow SSH round trip
            return {"bytes": 0}

    stamps, done = [], threading.Event()

    def emit(line):
        stamps.append(time.monotonic())
        if len(stamps) >= 5:
            done.set()

    p = _Progress(SlowNode(), "/x", None, emit, interval_s=0.4)
    p.thread.start()
    try:
        assert done.wait(10)
    finally:
        p.stop.set()
        p.thread.join(5)
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
    assert gaps[len(gaps) // 2] < 0.55, gaps  # stretched: 0.4 + 0.25 = 0.65


def test_a_hub_that_stops_answering_mid_file_is_a_stall_not_a_slow_link(hub, tmp_path):  # noqa: F811
    """The hub sends part of a shard and then nothing, the connection open: after the stall window (6 s here) hf
    is stopped on the node and the result names the endpoint and the file; hf is gone from the node. (The window
    must outlast hf's own start, which on a loaded host can take seconds before its first file.)"""
    node = LocalNode("node1", python_cmd="/usr/bin/python3")
    d = tmp_path / "stall" / "modeldrop--unit-model"
    hub.handle.set_faults(stall_body={"patterns": ["*.safetensors"], "fraction": 0.25})
    t0 = time.monotonic()
    try:
        plan = DownloadPlan(HF, hub.repo, str(d), env=_env(hub, tmp_path), timeout_s=120, stall_s=6, interval_s=1)
        res = run_hf_download(node, plan, lambda s: None)
    finally:
        hub.handle.clear_faults()
    took = time.monotonic() - t0
    assert res.stalled and res.rc == STALL_RC and not res.timed_out, (res.hub_reason, res.stderr_tail)
    reason = res.hub_reason
    assert f"the hub at {hub.url} stopped answering" in reason and "stall window 6s" in reason, reason
    assert "last file: model-0000" in reason and ".safetensors" in reason and "\n" not in reason, reason
    assert took < 30, took
    left = node.run_probe("procs", {"pids": None, "exe_paths": None, "own_only": True,
                                    "argv_has": [f"--local-dir={d}"]})["procs"]
    assert left == [], left


def test_plan_comes_from_the_run_config_and_the_verdict_names_the_node(tmp_path):
    from modeldrop.config import load_config
    from modeldrop.download import DownloadResult, download_verdict, plan_download
    from modeldrop.hub import ExpectedFile, ExpectedManifest, HubExpectation

    environ = {"PROFILE_PATH": str(tmp_path / "profiles.json"), "HF_TOKEN": "hf_plan_token",
               "HF_ENDPOINT": "https://hub.example.org", "HF_CMD_NODE2": "/opt/hf2", "HF_INCLUDE": "*.json",
               "MODEL_DIR_NODE2": "~/Models/org--m"}
    cfg = load_config({"MODEL_ID": "org/m", "NODES": "local,studio2"}, environ=environ)
    manifest = ExpectedManifest("c" * 40, {"a.json": ExpectedFile(3, None, None),
                                           "b.json": ExpectedFile(4, None, None)})
    plan = plan_download(cfg, 2, HubExpectation(manifest=manifest))
    assert (plan.hf_cmd, plan.model_id, plan.local_dir, plan.include) == ("/opt/hf2", "org/m", "~/Models/org--m",
                                                                          ("*.json",))
    assert plan.env == {"HF_ENDPOINT": "https://hub.example.org", "HF_TOKEN": "hf_plan_token"}
    assert plan.expected_bytes == 7 and plan.revision == "main" and plan.timeout_s > 3600
    failed = download_verdict(2, plan, DownloadResult(1, None, "", "x\nboom", 1.0, None))
    assert not failed.ok and failed.problems == ["node2 hf download rc 1: boom"]
    assert failed.summary == "node2: hf download org/m into ~/Models/org--m failed (rc 1): boom"
    stopped = download_verdict(2, plan, DownloadResult(143, None, "", "", 1.0, None), "node1's download failed")
    assert stopped.summary.endswith("stopped because node1's download failed")
    assert download_verdict(2, plan, DownloadResult(0, "/p", "", "", 1.0, None)).ok

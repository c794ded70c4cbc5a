"""Whole runs with --parallel-downloads against the sandbox: node 2's download starts with node 1's and the
gates still report in the guide's order; node 2 failing (a 429 for node 2 only) stops node 1's running hf by
pid, or with --keep-downloading lets it finish. Node 1 sits on a slow line of its own (the hub's per-node
links) so its download is still running when node 2's fails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests_selftest.support.file_runs import run

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(900)]
SLOW_BPS = 60_000  # the tiny model's ~1.6 MB takes ~27 s on node 1's line


def faults(sbx) -> dict:
    return {"node_link_bps": {sbx.node_user(1): SLOW_BPS},
            "rate_limit_429": {"scope": "revision", "clients": [sbx.node_user(2)]}}


def records(r) -> list[dict]:
    return [json.loads(x) for x in (r.run_folder() / "ledger.jsonl").read_text().splitlines() if x.strip()]


def hf_downloads_of(user: str) -> list[int]:
    """Live `hf download` processes of a node user (from /proc)."""
    import pwd
    uid, out = pwd.getpwnam(user).pw_uid, []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and d.stat().st_uid == uid and \
                    b"download" in (d / "cmdline").read_bytes().split(b"\0"):
                out.append(int(d.name))
        except OSError:
            continue
    return out


def test_a_failing_node_stops_the_other_download_by_pid(clean):
    sbx, reports = clean
    sbx.hub.set_faults(faults(sbx))
    n_req = len(sbx.hub.requests())
    r = run(sbx, reports, "--parallel-downloads")
    msg = r.message("node1_download")
    assert r.outcome("node1_download") == "failed", (r.outcomes, r.output[-3000:])
    assert "stopped because node2's download failed (rc 1)" in msg and "429" in msg, msg
    assert r.outcome("node2_download") != "passed" and r.outcome("startup") != "passed"
    recs = records(r)
    starts = {x["node"]: x["start"] for x in recs if x["event"] == "download_start"}
    assert set(starts) == {"node1", "node2"} and abs(starts["node1"] - starts["node2"]) < 2.0
    end1 = next(x for x in recs if x["event"] == "download_end" and x["node"] == "node1")
    assert end1["rc"] != 0 and "node2's download failed" in end1["stopped"]
    sent = sum(q["bytes"] for q in sbx.hub.requests()[n_req:] if q.get("node", "").startswith(sbx.node_user(1) + "@"))
    assert sent < sbx.model_info["storage_bytes"], "node 1 was stopped before it had the weights"
    assert hf_downloads_of(sbx.node_user(1)) == [], "no hf left running on node 1"


def test_keep_downloading_lets_the_other_finish_and_gates_report_in_order(clean):
    sbx, reports = clean
    sbx.hub.set_faults(faults(sbx))
    r = run(sbx, reports, "--parallel-downloads", "--keep-downloading")
    assert r.outcome("node1_download") == "passed" and r.outcome("node1_verify") == "passed", r.outcomes
    assert r.outcome("node2_download") == "failed" and "429" in r.message("node2_download")
    recs = records(r)
    starts = {x["node"]: x["start"] for x in recs if x["event"] == "download_start"}
    assert abs(starts["node1"] - starts["node2"]) < 2.0, "node 2 started with node 1"
    ended = {x["node"]: x["end"] for x in recs if x["event"] == "download_end"}
    assert ended["node2"] < ended["node1"], "node 2 failed while node 1 was still downloading"
    gates = [x["gate"] for x in recs if x["event"] in ("pass", "fail")]
    assert gates[:5] == ["preflight", "node1_download", "node1_verify", "node1_canary", "node2_download"], gates
    assert os.path.exists(r.run_folder() / "plots" / "timeline.png")

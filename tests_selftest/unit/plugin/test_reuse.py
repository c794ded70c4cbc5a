"""Targeted reruns and --resume-bootstrap through the pass cache: reuse of fresh matching passes, and
precise refusals when a pass is stale (age), a node's files changed (digest), exo changed, or none exists."""

from __future__ import annotations

import json
import time

from modeldrop.ledger.summary import EXIT_BLOCKED
from tests_selftest.support.plugin_kit import (
    BASE,
    FULL_ORDER_2,
    default_facts,
    handoff_block,
    jsonl,
    latest,
    make_suite,
    run_shell,
    set_behaviour,
    set_facts,
    trace,
)

K_TRANSPORT = "transport and not cluster"  # the fake module is test_a_cluster.py: keep -k precise


def green_run(pytester):
    make_suite(pytester)
    assert pytester.runpytest(*BASE).ret == 0
    trace(pytester)


def skip_reason(pytester, gate: str) -> str:
    return next(r["reason"] for r in jsonl(latest(pytester)) if r["event"] == "skip" and r["gate"] == gate)


def age_cache(pytester, hours: float) -> None:
    path = pytester.path / "reports" / "pass_cache.json"
    data = json.loads(path.read_text())
    for rows in data["passes"].values():
        for row in rows:
            row["time"] -= hours * 3600
    path.write_text(json.dumps(data))


def test_k_transport_reuses_fresh_matching_passes(pytester):
    green_run(pytester)
    result = pytester.runpytest(*BASE, "-k", "transport")
    assert result.ret == 0
    assert trace(pytester) == ["transport"]
    records = jsonl(latest(pytester))
    assert [r["gate"] for r in records if r["event"] == "reuse"] == FULL_ORDER_2[:10]
    block = handoff_block(latest(pytester))
    assert block["LAST_PASS_PHASE"] == "6 (transport)"
    assert "| placement | 5 | reused |" in (latest(pytester) / "handoff.md").read_text()


def test_stale_pass_is_refused_with_its_age(pytester):
    green_run(pytester)
    age_cache(pytester, 30)
    result = pytester.runpytest(*BASE, "-k", "transport")
    assert trace(pytester) == []
    reason = skip_reason(pytester, "transport")
    assert reason.startswith("no reusable pass for preflight: its last pass (")
    assert reason.endswith("is older than --pass-max-age 24h (recorded 30h ago)"), reason
    assert result.ret == EXIT_BLOCKED, "a rerun that skipped its gate for a missing upstream pass is not a success"
    assert pytester.runpytest(*BASE, "-k", "transport", "--pass-max-age", "2d").ret == 0
    assert trace(pytester) == ["transport"]


def test_pass_refused_when_a_nodes_files_changed(pytester):
    green_run(pytester)
    facts = default_facts()
    facts["manifests"]["2"] = "digest-2-after-someone-deleted-a-shard"
    set_facts(pytester, facts)
    pytester.runpytest(*BASE, "-k", "transport")
    assert trace(pytester) == []
    reason = skip_reason(pytester, "transport")
    assert reason.startswith("no reusable pass for node2_verify: its last pass (")
    assert reason.endswith("was for other files on node2 (manifest changed)"), reason
    block = handoff_block(latest(pytester))
    assert block["KNOWN_BLOCKER"].startswith("transport: no reusable pass for node2_verify")
    assert block["NEXT_COMMAND"].endswith("--resume-bootstrap")


def test_pass_refused_when_exo_changed(pytester):
    green_run(pytester)
    facts = default_facts()
    facts["exo"]["1"] = "new:1.1"
    set_facts(pytester, facts)
    pytester.runpytest(*BASE, "-k", "transport")
    assert "was for exo new:1.0 on node1 (now new:1.1)" in skip_reason(pytester, "transport")


def test_never_passed(pytester):
    make_suite(pytester)
    pytester.runpytest(*BASE, "-k", "transport")
    assert skip_reason(pytester, "transport") == "no reusable pass for preflight: never passed for this fingerprint"


def test_upstream_failed_in_an_earlier_run_is_not_reused(pytester):
    make_suite(pytester, behaviour={"parity": "fail:manifests differ"})
    pytester.runpytest(*BASE)
    trace(pytester)
    pytester.runpytest(*BASE, "-k", "startup")
    assert skip_reason(pytester, "startup") == "no reusable pass for parity: never passed for this fingerprint"


def test_resume_bootstrap_reuses_then_runs_from_the_first_gate_without_a_pass(pytester):
    make_suite(pytester, behaviour={"placement": "fail:no placement for min_nodes=2"})
    assert pytester.runpytest(*BASE).ret == 1
    trace(pytester)
    set_behaviour(pytester, {})
    result = pytester.runpytest(*BASE, "--resume-bootstrap", "-rs")
    assert result.ret == 0
    assert trace(pytester) == ["placement", "transport", "chat"]
    result.stdout.fnmatch_lines(["SKIPPED*reused pass from *(run *)"])
    records = jsonl(latest(pytester))
    assert [r["gate"] for r in records if r["event"] == "reuse"] == FULL_ORDER_2[:9]
    assert not [r for r in records if r["event"] == "skip"]
    text = (latest(pytester) / "handoff.md").read_text()
    assert "| cluster | 5 | reused |" in text and "GREEN" in text
    assert "cluster (reused)" in (latest(pytester) / "ledger.html").read_text()


def test_resume_bootstrap_reruns_everything_after_a_changed_gate(pytester):
    green_run(pytester)
    facts = default_facts()
    facts["manifests"]["1"] = "digest-1-changed"
    set_facts(pytester, facts)
    assert pytester.runpytest(*BASE, "--resume-bootstrap").ret == 0
    assert trace(pytester) == FULL_ORDER_2[2:]  # the download's pass stands; the files are re-verified
    why = next(r for r in jsonl(latest(pytester)) if r["event"] == "resume_from")
    assert why["gate"] == "node1_verify" and "other files on node1" in why["why"]


# The bootstrap after a green --audit: preflight, then the exo gates (files reused).
AFTER_AUDIT = ["preflight", "node1_canary", *FULL_ORDER_2[7:]]


def test_audit_passes_are_recorded_and_reused(pytester):
    make_suite(pytester)
    assert pytester.runpytest(*BASE, "--audit").ret == 0
    trace(pytester)
    assert pytester.runpytest(*BASE, "--audit", "-k", "parity").ret == 0
    assert trace(pytester) == ["parity"]
    passes = json.loads((pytester.path / "reports" / "pass_cache.json").read_text())["passes"]
    assert set(passes) == {"preflight", "node1_verify", "node2_verify", "parity"}
    assert all(time.time() - rows[0]["time"] < 600 for rows in passes.values())
    # Ring input ready: the printed next step is the bootstrap. The audit's preflight skipped the exo
    # checks, so it runs again; the audit's verify and parity passes are reused (and the downloads with
    # them: the files are verified), and the exo gates run.
    nxt = handoff_block(latest(pytester))["NEXT_COMMAND"]
    assert "--audit" not in nxt and nxt.endswith("--resume-bootstrap")
    assert pytester.runpytest(*BASE, "--resume-bootstrap").ret == 0
    assert trace(pytester) == AFTER_AUDIT
    reused = [r["gate"] for r in jsonl(latest(pytester)) if r["event"] == "reuse"]
    assert reused == ["node1_download", "node1_verify", "node2_download", "node2_verify", "parity"]


def test_a_gate_with_two_tests_is_reused_as_a_whole(pytester):
    make_suite(pytester, nodes="studio1")
    pytester.makepyfile(**{"gates/test_c_two": '''
import pytest
from gatehelpers import act

@pytest.mark.gate("transport")
def test_transport_logs(evidence):
    act("transport-logs", evidence)
'''})
    assert pytester.runpytest(*BASE).ret == 0
    assert "transport-logs" in trace(pytester)
    assert pytester.runpytest(*BASE, "--resume-bootstrap").ret == 0
    assert trace(pytester) == []
    reuse = [r["gate"] for r in jsonl(latest(pytester)) if r["event"] == "reuse"]
    assert reuse.count("transport") == 1


def test_audit_from_the_env_file_points_at_a_bootstrap_that_works_as_printed(pytester):
    make_suite(pytester, env_extra="AUDIT=1\n")
    assert pytester.runpytest(*BASE).ret == 0
    assert trace(pytester) == ["preflight", "node1_verify", "node2_verify", "parity"]
    nxt = handoff_block(latest(pytester))["NEXT_COMMAND"]
    assert nxt.startswith("env AUDIT=0 ") and nxt.endswith("--resume-bootstrap")
    done = run_shell(nxt, pytester.path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert trace(pytester) == AFTER_AUDIT


def test_resume_after_audit_downloads_again_when_the_files_changed(pytester):
    """A verify pass is reused only while the files are what it verified: changed files on node 2 mean a
    download and verify there (and parity and the exo gates after them)."""
    make_suite(pytester)
    assert pytester.runpytest(*BASE, "--audit").ret == 0
    trace(pytester)
    facts = default_facts()
    facts["manifests"]["2"] = "digest-2-changed"
    set_facts(pytester, facts)
    assert pytester.runpytest(*BASE, "--resume-bootstrap").ret == 0
    assert trace(pytester) == ["preflight", "node1_canary", "node2_download", "node2_verify", "parity",
                               *FULL_ORDER_2[7:]]

"""Phase 0 — preflight: every node can run what the bootstrap needs, before anything is downloaded."""

import pytest

from modeldrop import signatures
from modeldrop.download import expected_total
from modeldrop.preflight_gate import run_preflight
from modeldrop.serving import block, lines


@pytest.mark.gate("preflight")
def test_preflight(run_config, node_pool, on_each_node, run_facts, evidence, hub_expectation, rerun_command):
    """SSH, python3, the exact hf and exo binaries (exo looked up where it installs to when not set), exo build parity,
    no exo the run did not start, API port, disk, model dir name and place, reach (TCP around a ring, and SSH both
    ways), no node listed twice, and the serving verdict (weights, architecture, memory fit, card) before anything
    is downloaded."""
    run = run_preflight(node_pool.all(), run_config, expected_total(run_config, hub_expectation),
                        hub_expectation.error, rerun_command, on_each_node)
    run_facts.record_preflight({k: p.hf for k, p in run.pre.items()}, run.builds)
    for name, value in run.evidence().items():
        evidence.json(name, value)
    if run.exo is not None:
        evidence.note("exo", run.notes)
    evidence.serving_verdict(block(run.serving))
    evidence.text("serving verdict", "\n".join(lines(run.serving)))
    evidence.signatures([m.as_dict() for m in signatures.match("preflight", facts=run.serving.facts)])
    for line in run.verdict.warnings:
        evidence.note("warning", line)
    if not run.verdict.ok:
        evidence.strongest(run.verdict.problems[0])
        pytest.fail(run.verdict.summary, pytrace=False)

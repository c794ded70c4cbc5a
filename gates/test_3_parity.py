"""Phase 3 — parity: every node holds the same files (path, size), cache and macOS litter excluded."""

import pytest

from modeldrop import audit


@pytest.mark.gate("parity")
def test_parity(run_config, run_facts, on_each_node, evidence):
    """The manifests of all nodes are equal (any a verify gate did not measure is read on every node at once)."""
    manifests = {f"node{k}": m for k, m in on_each_node(run_facts.manifest).items()}
    verdict = audit.parity(manifests, strict=not run_config.fast)
    evidence.json("parity", verdict.as_dict())
    for w in verdict.warnings:
        evidence.note("warning", w)
    if not verdict.ok:
        evidence.strongest(verdict.problems[0])
        pytest.fail(f"nodes differ: {verdict.summary}", pytrace=False)

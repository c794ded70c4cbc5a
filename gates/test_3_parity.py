"""Phase 3 — parity: every node holds the same files (path, size), cache and macOS litter excluded."""

import pytest

from modeldrop import audit


@pytest.mark.gate("parity")
def test_parity(run_config, run_facts, evidence):
    """The manifests of all nodes are equal."""
    manifests = {f"node{n.index}": run_facts.manifest(n.index) for n in run_config.nodes}
    verdict = audit.parity(manifests, strict=not run_config.fast)
    evidence.json("parity", verdict.as_dict())
    for w in verdict.warnings:
        evidence.note("warning", w)
    if not verdict.ok:
        evidence.strongest(verdict.problems[0])
        pytest.fail(f"nodes differ: {verdict.summary}", pytrace=False)

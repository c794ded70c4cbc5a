"""Phase 0 — preflight: every node can run what the bootstrap needs, before anything is downloaded."""

import pytest

from gates.steps import expected_total
from modeldrop.exo.preflight import exo_preflight
from modeldrop.preflight import check_node, duplicate_problems, preflight_verdict, reach_problems


@pytest.mark.gate("preflight")
def test_preflight(run_config, node_pool, on_each_node, run_facts, evidence, hub_expectation):
    """SSH, python3, the exact hf and exo binaries, exo build parity, API port, disk, model dir name and place, reach;
    no node listed twice."""
    nodes = node_pool.all()
    total = expected_total(run_config, hub_expectation)
    pre = on_each_node(lambda k: check_node(nodes[k], run_config.node(k), run_config, total))
    problems = duplicate_problems(pre, run_config) + [p for k in sorted(pre) for p in pre[k].problems]
    for k, p in pre.items():
        if p.hf:
            run_facts.set_hf_probe(k, p.hf)
    evidence.json("nodes", {f"node{k}": {"facts": p.facts, "hf": p.hf, "disk": p.disk,
                                         "present_bytes": p.present_bytes, "located": p.located}
                            for k, p in pre.items()})
    reach_notes: list[str] = []
    if not problems:
        reach, reach_notes = reach_problems(pre, nodes, run_config)
        problems += reach
    warnings: list[str] = []
    if not run_config.audit:
        answered = {k: nodes[k] for k in nodes if pre[k].facts}  # one line per unreachable node is enough
        exo = exo_preflight(answered, run_config)
        for k, build in exo.builds.items():
            run_facts.set_exo_build(k, build)
        evidence.json("exo", exo.evidence)
        problems, warnings = problems + exo.problems, exo.warnings
    verdict = preflight_verdict(problems, warnings + reach_notes, len(nodes))
    for line in verdict.warnings:
        evidence.note("warning", line)
    if not verdict.ok:
        evidence.strongest(verdict.problems[0])
        pytest.fail(verdict.summary, pytrace=False)

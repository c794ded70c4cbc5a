"""Phase 0 — preflight: every node can run what the bootstrap needs, before anything is downloaded."""

import pytest

from modeldrop import signatures
from modeldrop.download import expected_total
from modeldrop.exo.preflight import exo_preflight
from modeldrop.preflight import (
    check_node,
    duplicate_problems,
    preflight_verdict,
    reach_problems,
    ssh_login_warnings,
)
from modeldrop.serving import block, lines, serving_preflight


@pytest.mark.gate("preflight")
def test_preflight(run_config, node_pool, on_each_node, run_facts, evidence, hub_expectation, rerun_command):
    """SSH, python3, the exact hf and exo binaries (exo looked up where it installs to when not set), exo build parity,
    no exo the run did not start, API port, disk, model dir name and place, reach (TCP around a ring, and SSH both
    ways), no node listed twice, and the serving verdict (weights, architecture, memory fit, card) before anything
    is downloaded."""
    nodes = node_pool.all()
    total = expected_total(run_config, hub_expectation)
    pre = on_each_node(lambda k: check_node(nodes[k], run_config.node(k), run_config, total))
    problems = duplicate_problems(pre, run_config) + [p for k in sorted(pre) for p in pre[k].problems]
    for k, p in pre.items():
        if p.hf:
            run_facts.set_hf_probe(k, p.hf)
    evidence.json("nodes", {f"node{k}": {"facts": p.facts, "hf": p.hf, "disk": p.disk,
                                         "present_bytes": p.present_bytes, "located": p.located,
                                         "leftovers": p.leftovers}
                            for k, p in pre.items()})
    if run_config.online and hub_expectation.error:
        problems.append(f"{hub_expectation.error} (--online downloads and audits against the hub's file list; check "
                        f"HF_ENDPOINT and the network from this host, or run without --online)")
    warnings = [w for k in sorted(pre) for w in pre[k].warnings]
    if not problems:
        reach, reach_notes = reach_problems(pre, nodes, run_config)
        problems += reach
        warnings += reach_notes
    if not problems:
        ssh_warnings, logins = ssh_login_warnings(nodes, run_config)
        evidence.json("ssh logins between nodes", logins)
        warnings += ssh_warnings
    notes: list[str] = []
    answered = {k: nodes[k] for k in nodes if pre[k].facts}  # one line per unreachable node is enough
    if not run_config.audit:
        exo = exo_preflight(answered, run_config, rerun_command)
        for k, build in exo.builds.items():
            run_facts.set_exo_build(k, build)
        evidence.json("exo", exo.evidence)
        notes = exo.notes
        evidence.note("exo", notes)
        problems, warnings = problems + exo.problems, warnings + exo.warnings
    serving = serving_preflight(answered, run_config, on_each_node)  # will it serve? before the first byte
    evidence.serving_verdict(block(serving))
    evidence.text("serving verdict", "\n".join(lines(serving)))
    evidence.json("serving", serving.details["nodes"])
    evidence.signatures([m.as_dict() for m in signatures.match("preflight", facts=serving.facts)])
    problems, warnings = serving.problems + problems, warnings + serving.warnings  # the decisive fact first
    verdict = preflight_verdict(problems, warnings, len(nodes), notes)
    for line in verdict.warnings:
        evidence.note("warning", line)
    if not verdict.ok:
        evidence.strongest(verdict.problems[0])
        pytest.fail(verdict.summary, pytrace=False)

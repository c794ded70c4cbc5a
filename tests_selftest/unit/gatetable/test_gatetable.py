"""The gate table is the one source of gate facts: order, phases, timeouts, fingerprints, signatures, README."""

from __future__ import annotations

import ast

import pytest

from modeldrop import gatetable, signatures
from modeldrop.gatetable import gate_order, phase_of, upstream_of
from tests_selftest.support import REPO


def test_gate_order_and_chain():
    order = gate_order(3)
    assert order[:4] == ["preflight", "node1_download", "node1_verify", "node1_canary"]
    assert order.index("node3_verify") < order.index("parity") < order.index("startup") < order.index("chat")
    assert upstream_of("node2_download", order) == "node1_canary"
    assert upstream_of("preflight", order) is None
    assert gate_order(2, audit=True) == ["preflight", "node1_verify", "node2_verify", "parity"]
    assert gate_order(1)[-5:] == ["startup", "cluster", "placement", "transport", "chat"]


@pytest.mark.parametrize("gate,phase", [("preflight", "0"), ("node1_download", "1"), ("node1_verify", "1A"),
                                        ("node1_canary", "1B"), ("node3_download", "2"), ("node2_verify", "2A"),
                                        ("parity", "3"), ("startup", "4"), ("cluster", "5"), ("placement", "5"),
                                        ("transport", "6"), ("chat", "7"), ("node2_canary", "?")])
def test_phases_as_the_guide_numbers_them(gate, phase):
    assert phase_of(gate) == phase


def test_ids_parse_through_the_table():
    assert gatetable.gate_kind("node4_verify") == "verify" and gatetable.gate_node("node4_verify") == 4
    assert gatetable.gate_of("node2_canary") is None  # only node 1 has a canary
    assert gatetable.timeout_of("node3_download") == gatetable.BY_KIND["download"].timeout_s > 4 * 3600
    assert gatetable.timeout_of("chat") == gatetable.BY_KIND["chat"].timeout_s
    assert gatetable.timeout_of("node2_canary") == gatetable.DEFAULT_TIMEOUT_S
    assert gatetable.timeout_of("nonsense") == gatetable.DEFAULT_TIMEOUT_S


def test_readme_gate_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert gatetable.readme_table() in readme, "README's gate table drifted: paste gatetable.readme_table()"


def test_every_gate_marker_names_a_table_gate():
    ids = set()
    for path in sorted((REPO / "gates").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "gate" and node.args:
                ids.add(node.args[0].value)
    patterns = {g.id for g in gatetable.GATES} | {g.id_for(1) for g in gatetable.GATES}
    assert ids and ids <= patterns, ids - patterns
    assert {g.id for g in gatetable.GATES if not g.per_node} | {"node1_download", "node1_verify"} <= ids


def test_every_signature_names_table_gates():
    known = set(gate_order(4)) | {"bench"}
    for sig in signatures.TABLE:
        assert set(sig.gates) <= known, (sig.id, set(sig.gates) - known)
    assert signatures.ALL_EXO_GATES == ("node1_canary", "startup", "cluster", "placement", "transport", "chat")



def test_criteria_have_one_wording_for_readme_and_handoff():
    from modeldrop.ledger.runbook import criteria_table

    passes, stops = gatetable.criteria_of("node2_download")
    assert "MODEL_DIR_NODE2" in passes and "MODEL_DIR_NODE1" in gatetable.criteria_of("node1_download")[0]
    assert stops and gatetable.criteria_of("node2_canary") == ("—", "—")
    assert f"| node1_download | 1 | {gatetable.criteria_of('node1_download')[0]} |" in gatetable.readme_table()
    rows = criteria_table(gate_order(2))
    for gate in gate_order(2):
        assert any(r.startswith(f"| {phase_of(gate)} | {gate} | ") and gatetable.criteria_of(gate)[1] in r
                   for r in rows), gate


def test_resume_chains_and_exo_start_come_from_the_table():
    assert gatetable.resume_stand_ins("node3_download") == ["node3_download", "node3_verify"]
    assert gatetable.resume_stand_ins("parity") == ["parity"]
    assert gatetable.chains_broken_by(gatetable.resume_chain("node2_verify")) == {"files", "exo"}
    assert gatetable.chains_broken_by(gatetable.resume_chain("startup")) == {"exo"}
    assert gatetable.chains_broken_by(gatetable.resume_chain("preflight")) == {"none"}
    assert signatures.CANARY_START == ("node1_canary", "startup")
    assert [g for g in gate_order(2) if gatetable.after_exo_start(g)] == list(signatures.AFTER_START) == [
        "cluster", "placement", "transport", "chat"]

"""The one Verdict shape: its invariants, and that every judging function in the library returns it."""

from __future__ import annotations

import ast

import pytest

from modeldrop import audit
from modeldrop.exo.verdicts import chat_verdict
from modeldrop.preflight import preflight_verdict
from modeldrop.verdict import Fact, Verdict
from tests_selftest.support import REPO

LIBRARY = REPO / "modeldrop"


def test_ok_exactly_when_there_is_no_problem():
    assert Verdict.passed("fine").ok and Verdict.passed("fine").problems == []
    failed = Verdict.failed(["node1: a", "node2: b"])
    assert not failed.ok and failed.summary == "node1: a; node2: b"
    assert Verdict.failed("one line").problems == ["one line"]
    with pytest.raises(ValueError, match="cannot be ok"):
        Verdict(True, "fine", problems=["but broken"])


def test_judged_and_settle_follow_the_problems():
    assert Verdict.judged([], "all good").summary == "all good"
    assert not Verdict.judged(["x"], "all good").ok
    v = Verdict.open()
    v.warnings.append("odd file")
    assert v.settle("complete").ok and v.summary == "complete (1 warning)"
    v.problems.append("shard missing")
    assert not v.settle("complete").ok and v.summary == "shard missing"


def test_reword_prefixes_summary_and_problems():
    v = Verdict.failed("no card").reword("node2: ")
    assert v.summary == "node2: no card" and v.problems == ["node2: no card"]


def test_facts_are_checked_and_evidence_is_plain_json():
    with pytest.raises(ValueError, match="unknown verdict fact 'stalld'"):
        Verdict.failed("x", facts={"stalld": True})
    d = Verdict.failed("x", {"n": 1}, {"stalled": True}).as_dict()
    assert d == {"ok": False, "summary": "x", "problems": ["x"], "warnings": [], "details": {"n": 1},
                 "facts": {"stalled": True}}
    assert Verdict.failed("x", facts={"stalled": True}).facts == {Fact.stalled: True}


def test_file_preflight_and_exo_judgements_share_the_shape():
    manifest = {"exists": True, "is_dir": True, "expanded": "/m", "files": [{"path": "config.json", "size": 2}]}
    judged = [audit.completeness(manifest, None), audit.parity({"node1": manifest, "node2": {"files": []}}),
              preflight_verdict(["node2: hf not found"], ["MLX drift"], 2), chat_verdict([])]
    assert all(type(v) is Verdict for v in judged)
    assert [v.ok for v in judged] == [False, False, False, True]
    assert judged[1].problems == ["only on node1: config.json (2 B)"]
    assert judged[2].summary.startswith("1 preflight problem(s): ") and judged[2].warnings == ["MLX drift"]


def test_the_library_defines_one_verdict_class():
    defined = [str(p.relative_to(LIBRARY)) for p in LIBRARY.rglob("*.py")
               for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.ClassDef) and node.name.endswith("Verdict")]
    assert defined == ["verdict.py"], defined

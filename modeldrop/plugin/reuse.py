"""Pass reuse: a gate deselected by `-k` (or skipped by --resume-bootstrap) counts through a fresh
pass of the same fingerprint in the pass cache; otherwise its dependents skip and say why."""

from __future__ import annotations

import pytest

from modeldrop import gatetable
from modeldrop.ledger.fingerprint import digest, fingerprint_parts
from modeldrop.ledger.handoff import BAD_OUTCOMES, one_line
from modeldrop.ledger.passcache import PassRecord
from modeldrop.plugin.session import GateSession, facts_of


def fingerprint_now(gs: GateSession, config: pytest.Config, gate: str) -> tuple[dict, str]:
    """Parts and digest of `gate`'s fingerprint now (may probe nodes through the facts)."""
    parts = fingerprint_parts(gate, gs.cfg, facts_of(config))
    gs.parts[gate] = parts
    return parts, digest(parts)


def resumable(gs: GateSession, config: pytest.Config, gate: str) -> tuple[PassRecord | None, str]:
    """A pass `--resume-bootstrap` may reuse for `gate`: its own, or a stand-in's from the gate table (for
    nodeK_download nodeK_verify's: the files are verified, e.g. by a green --audit, so there is nothing to
    download); else None and why the gate's own pass is not reusable."""
    own, *stand_ins = gatetable.resume_stand_ins(gate)
    rec, why = reusable(gs, config, own)
    for g in stand_ins:
        if rec is None:
            rec, _ = reusable(gs, config, g)
    return rec, why


def reusable(gs: GateSession, config: pytest.Config, gate: str) -> tuple[PassRecord | None, str]:
    """A fresh matching pass of `gate`, or None and why not (stale / changed / never passed)."""
    try:
        parts, fp = fingerprint_now(gs, config, gate)
    except Exception as e:  # noqa: BLE001 - an unreachable node means "not reusable", said plainly
        return None, f"cannot compute its fingerprint ({type(e).__name__}: {one_line(e, 160)})"
    return gs.cache.fresh(gate, fp, float(gs.cfg.pass_max_age), gs.cfg.model_id, parts)


def resume_broken(gs: GateSession, chain: str) -> bool:
    """True once a gate that breaks `chain` ran under --resume-bootstrap (the ledger's `resume_from` records)."""
    return any(chain in gatetable.chains_broken_by(gatetable.resume_chain(g)) for g in gs.ledger.resumed_at())


def upstream_verdict(gs: GateSession, config: pytest.Config, gate: str) -> tuple[str, str, tuple] | None:
    """None when `gate` may run; else (kind, skip reason, root) with kind blocked/missing."""
    ledger = gs.ledger
    up = gatetable.upstream_of(gate, gs.order)
    chain: list[str] = []
    while up is not None and up not in gs.selected and ledger.outcome(up) is None:
        chain.append(up)
        up = gatetable.upstream_of(up, gs.order)
    if up is not None and ledger.outcome(up) in BAD_OUTCOMES:
        root = ledger.root_cause(up)
        return "blocked", f"blocked by {root[0]} ({root[1]}): {root[2]}", root
    if up is not None and ledger.outcome(up) is None:
        reason = f"blocked by {up} (not run): it did not finish before {gate}"
        return "blocked", reason, (up, "not run", "it did not finish")
    for g in reversed(chain):
        rec, why = reusable(gs, config, g)
        if rec is None:
            reason = f"no reusable pass for {g}: {why}"
            return "missing", reason, (gate, "skipped", reason)
        ledger.gate_reused(g, rec.time, rec.run_id, rec.summary)
    return None

"""Item reports to gate outcomes: a gate's items combine worst-first, a pass is cached at once."""

from __future__ import annotations

import re
import time
from typing import Any, NoReturn

import pytest

from modeldrop.ledger.handoff import one_line
from modeldrop.plugin.reuse import fingerprint_now
from modeldrop.plugin.session import GateSession

SEVERITY = {"passed": 0, "reused": 0, "skipped": 1, "failed": 2}


def skip_here(reason: str) -> NoReturn:
    """Skip the current item, reported at the test's own location (as skip marks are), not this file's."""
    try:
        raise pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # a pytest without the keyword
        pass
    pytest.skip(reason)


def is_subtest(report: Any) -> bool:
    return type(report).__name__ == "SubtestReport"


def reason_of(report: pytest.TestReport) -> str:
    """First line of why a report failed or skipped, without `Skipped:`/`Failed:`/`AssertionError:`."""
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        text = str(lr[2])
    else:
        crash = getattr(lr, "reprcrash", None)
        text = crash.message if crash is not None else str(lr or "")
    line = one_line(text, 400)
    return re.sub(r"^(Skipped|Failed|AssertionError|_pytest\.outcomes\.\w+):\s*", "", line)


Root = tuple[str, str, str]


class GateTracker:
    """Per-item bookkeeping of a gate run; writes each finished gate to the ledger (the one record of it)."""

    def __init__(self, config: pytest.Config, gs: GateSession):
        self.config = config
        self.gs = gs
        self.items_left: dict[str, int] = {}
        self.item_worst: dict[str, tuple[str, str]] = {}
        self.skip_kind: dict[str, tuple[str, Root | None]] = {}  # nodeid -> (blocked/missing/reused, root)
        self.gate_items: dict[str, list[tuple[str, str, str, Root | None]]] = {}
        self.started: set[str] = set()
        self.t0: dict[str, float] = {}

    def start_gate(self, gate: str) -> bool:
        """Record the start of `gate` at its first item; True when it started now."""
        if gate in self.started:
            return False
        self.started.add(gate)
        self.t0[gate] = time.time()
        self.gs.ledger.gate_start(gate, self.t0[gate])
        return True

    def skip_as(self, nodeid: str, kind: str, root: Root | None = None) -> None:
        """The item is about to be skipped before its fixtures: blocked / missing (with the root cause) / reused."""
        self.skip_kind[nodeid] = (kind, root)

    def item_report(self, report: pytest.TestReport, gate: str | None, bench: str | None) -> str | None:
        """Fold one phase report into its item; on the teardown, into its gate. Returns the gate that
        finished now (or `bench` for a benchmark's last phase), else None."""
        if report.failed and gate is not None:
            self.gs.ledger.item_failed(gate, report.nodeid, report.when)
        worst = self.item_worst.get(report.nodeid, ("passed", ""))
        if report.outcome in ("failed", "skipped") and SEVERITY[report.outcome] > SEVERITY[worst[0]]:
            self.item_worst[report.nodeid] = (report.outcome, reason_of(report))
        if report.when == "setup":
            self.t0.setdefault(report.nodeid, report.start)
        if report.when != "teardown":
            return None
        outcome, reason = self.item_worst.get(report.nodeid, ("passed", ""))
        if gate is None:
            self.gs.ledger.bench_result(bench, outcome, reason, report.stop - self.t0.get(report.nodeid, report.stop))
            return bench
        kind, root = self.skip_kind.get(report.nodeid, ("self" if outcome == "skipped" else "", None))
        self.gate_items.setdefault(gate, []).append((outcome, reason, kind, root))
        self.items_left[gate] = self.items_left.get(gate, 1) - 1
        if self.items_left[gate] <= 0:
            self.finish_gate(gate, report.stop)
        return gate

    def finish_gate(self, gate: str, stop: float) -> None:
        """Combine the gate's items (worst wins), record it with its root cause, and cache a pass at once."""
        results = self.gate_items.get(gate, [])
        if results and all(kind == "reused" for _, _, kind, _ in results):
            return
        outcome, reason, kind, _ = max(results, key=lambda r: SEVERITY[r[0]]) if results else ("passed", "", "", None)
        if outcome == "failed" or (outcome == "skipped" and kind == "self"):
            root: Root | None = (gate, outcome, reason)
        else:
            root = next((r for _, _, _, r in results if r is not None), None)
        self.gs.ledger.gate_result(gate, outcome, reason, stop - self.t0.get(gate, stop),
                                   missing_pass=(kind == "missing"), root=root)
        if outcome == "passed":
            self.record_pass(gate)

    def record_pass(self, gate: str) -> None:
        """Store the pass with its fingerprint and the gate's notes (for reuse and the profile)."""
        gs = self.gs
        try:
            parts, fp = fingerprint_now(gs, self.config, gate)
            gs.cache.record(gate, fp, gs.folder.run_id, gs.ledger.pass_summary(gate), parts)
            gs.ledger.pass_cached(gate, fp)
        except Exception as e:  # noqa: BLE001 - a pass that cannot be cached is still a pass
            gs.ledger.warning(f"could not cache the pass of {gate}: {type(e).__name__}: {one_line(e, 160)}", gate)

"""pytest glue of the fault matrix (see tests_selftest/faultmatrix.py): the `fault` marker's recorder.

For a test marked `@pytest.mark.fault(...)`, every whole run it drives is observed (decoys alive before
and after, node processes counted at once, results lost, the gate that caught it), one row is appended
to the results file whatever the outcome, and a passing test whose "must be 0" columns are not 0 fails.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from modeldrop.gatetable import gate_order
from tests_selftest.support import faultmatrix as fm
from tests_selftest.support import runs

ROW_KEY = pytest.StashKey["Recorder"]()
_DECOYS: dict[str, list[fm.Decoy]] = {}


def _sandboxes(item: pytest.Item) -> list[Any]:
    """Sandbox objects among the test's fixture values (directly or inside a tuple)."""
    from sandbox.cluster import Sandbox
    found: list[Any] = []
    for value in getattr(item, "funcargs", {}).values():
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, Sandbox) and all(v is not f for f in found):
                found.append(v)
    return found


def _live_decoys(sbx: Any) -> list[fm.Decoy]:
    """This sandbox's decoys, started again where a test's own cleanup stopped the node users' processes."""
    key = str(sbx.root)
    decoys = _DECOYS.get(key, [])
    if not decoys or not all(d.alive() for d in decoys):
        fm.stop_decoys(decoys)
        decoys = _DECOYS[key] = fm.start_decoys(sbx)
    return decoys


class Recorder:
    """Collects one fault test's row from the runs it drives."""

    def __init__(self, item: pytest.Item, mark: pytest.Mark):
        kw = mark.kwargs
        self.item, self.since, self.window = item, kw.get("since"), kw.get("window")
        callspec = getattr(item, "callspec", None)  # a function-level mark on a parametrized test: a row per param
        per_param = callspec is not None and not any(m.name == "fault" for m in callspec.marks)
        fault = f"{mark.args[0]}[{callspec.id}]" if per_param else str(mark.args[0])
        self.row = fm.FaultRow(fault=fault, expected_gate=kw.get("gate", ""),
                               signature=kw.get("signature", ""), test=item.nodeid)
        self.sandboxes: list[Any] = []
        self.decoys: list[fm.Decoy] = []
        self.test_decoys: dict[str, Any] = {}  # the test's own decoys (name -> Popen): not left, must survive
        self.best: runs.RunResult | None = None

    def before(self, args: list[str]) -> None:
        """Before a whole run: the decoys are alive."""
        self.sandboxes = self.sandboxes or _sandboxes(self.item)
        self.decoys = [d for s in self.sandboxes for d in _live_decoys(s)]

    def after(self, result: runs.RunResult) -> None:
        """Right after a whole run, before the test cleans up: what it left and what it harmed."""
        exclude = {d.proc.pid for d in self.decoys} | {p.pid for p in self.test_decoys.values()}
        left = [p for s in self.sandboxes for p in fm.wait_no_node_processes(s, exclude)]
        harmed = [d.what for d in self.decoys if not d.alive()]
        harmed += [name for name, p in self.test_decoys.items() if p.poll() is not None]
        lost, why = fm.results_lost(result.run_folder(), result.outcomes) if (result.report_dir / "latest").exists() \
            else (0, [])
        r = self.row
        r.procs_left = (r.procs_left or 0) + len(left)
        r.decoys_harmed = (r.decoys_harmed or 0) + len(harmed)
        r.results_lost = (r.results_lost or 0) + lost
        r.notes += left[:5] + harmed + why[:5]
        n = max([int(g[4]) for g in result.outcomes if g.startswith("node") and g[4].isdigit()] or [2])
        caught = fm.first_failed(result.outcomes, gate_order(n))
        if caught is not None or self.best is None:
            self.best = result
            self._verdict(result, caught, gate_order(n))

    def _verdict(self, result: runs.RunResult, caught: str | None, order: list[str]) -> None:
        r = self.row
        events, _ = fm.ledger_events(result.run_folder()) if (result.report_dir / "latest").exists() else ([], 0)
        r.caught_by = caught or "nothing"
        gate = caught or r.expected_gate
        ids, message = fm.signature_ids(events, gate), result.message(gate)
        seen = [s for s in r.signature.split("|") if s and (s in ids or s in message)]  # "F5|F8": either
        r.signature_seen, r.signature_matched = bool(seen), (seen[0] if seen else None)
        r.verdict_s = fm.verdict_seconds(events, gate, self.since)
        r.window = fm.option_value(result.args, self.window)
        r.downstream_run = len(runs.later_gates_not_run(result, gate, order)) if gate in order else 0
        r.detail = result.message(gate).splitlines()[0][:160] if result.message(gate) else ""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("fault")
    if mark is not None:
        item.stash[ROW_KEY] = Recorder(item, mark)


@pytest.fixture
def fault_row(request: pytest.FixtureRequest) -> fm.FaultRow:
    """The row of a `fault`-marked test, for library-level faults to fill in what they measured."""
    rec = request.node.stash.get(ROW_KEY, None)
    if rec is None:
        raise pytest.UsageError("fault_row needs @pytest.mark.fault(...) on the test")
    return rec.row


@pytest.fixture
def fault_decoys(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A `fault`-marked test's own decoys (name -> Popen), added before its run: the recorder does not count them
    as processes left, and counts each one the run stopped as harmed."""
    rec = request.node.stash.get(ROW_KEY, None)
    if rec is None:
        raise pytest.UsageError("fault_decoys needs @pytest.mark.fault(...) on the test")
    return rec.test_decoys


class DecoyWatch:
    """For the whole runs of tests that are not fault rows: the decoys named exo survive them too."""

    def __init__(self, item: pytest.Item):
        self.item, self.decoys, self.harmed = item, [], []

    def before(self, args: list[str]) -> None:
        self.decoys = [d for s in _sandboxes(self.item) for d in _live_decoys(s)]

    def after(self, result: runs.RunResult) -> None:
        self.harmed += [d.what for d in self.decoys if not d.alive()]


def _watch_decoys(item: pytest.Item):
    """Run an unmarked test with its whole runs watched for harm to the decoys."""
    watch = DecoyWatch(item)
    runs.BEFORE_RUN.append(watch.before)
    runs.AFTER_RUN.append(watch.after)
    try:
        result = yield
    finally:
        runs.BEFORE_RUN.remove(watch.before)
        runs.AFTER_RUN.remove(watch.after)
    assert not watch.harmed, f"a run stopped a process that was not its own: {watch.harmed}"
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    rec: Recorder | None = item.stash.get(ROW_KEY, None)
    if rec is None:
        return (yield from _watch_decoys(item))
    runs.BEFORE_RUN.append(rec.before)
    runs.AFTER_RUN.append(rec.after)
    t0 = time.monotonic()
    try:
        result = yield
    except BaseException as exc:
        rec.row.outcome = "skipped" if isinstance(exc, pytest.skip.Exception) else "failed"
        rec.row.detail = rec.row.detail or (str(exc).splitlines() or [""])[0][:160]
        raise
    finally:
        runs.BEFORE_RUN.remove(rec.before)
        runs.AFTER_RUN.remove(rec.after)
        if rec.row.verdict_s is None and rec.best is None:
            rec.row.verdict_s = round(time.monotonic() - t0, 2)
        rec.row.append_to(fm.results_path())
    bad = rec.row.violations()
    assert not bad, f"fault {rec.row.fault}: {', '.join(bad)}: {rec.row.notes}"
    return result


def pytest_sessionstart(session: pytest.Session) -> None:
    """The controller starts a fresh results file (xdist workers append to it)."""
    if not hasattr(session.config, "workerinput"):
        fm.results_path().unlink(missing_ok=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the decoys this process started."""
    for decoys in _DECOYS.values():
        fm.stop_decoys(decoys)
    _DECOYS.clear()

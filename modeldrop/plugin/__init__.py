"""modeldrop's pytest layer: options, the gate order, skip-with-reason, pass reuse and the run ledger.

The only part of `modeldrop/` that imports pytest; this module holds its hooks, the modules beside
it the work. A *gate run* is a session whose paths lie under `gates/` or `benchmarks/`; for it
`pytest_configure` resolves the configuration (a bad value is one `ERROR:` line, exit 4, no node
touched) and creates the run folder. Gates are `@pytest.mark.gate("id")` or, per node,
`@pytest.mark.gate("node{k}_x", per_node_from=2)` with a fixture argument `k`. Items run in the
order of `modeldrop.gatetable`; a gate whose upstream failed or skipped is skipped naming the root
cause; an upstream not run in this session counts only through a fresh matching pass in the pass
cache; every pass is cached with its fingerprint as soon as it passes. The session ends with the run's summary
on the terminal and an exit status that means what it says (`modeldrop.ledger.summary`: 6 for a blocked run);
`--collect-only` keeps nothing.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from modeldrop import gatetable, loggers
from modeldrop.deadlines import DeadlineExceeded, alarm
from modeldrop.ledger import html as lhtml
from modeldrop.ledger.handoff import block_lines
from modeldrop.ledger.passcache import utc_minute
from modeldrop.plugin import bounds, hookspecs, options, ordering, reporting
from modeldrop.plugin.live import ItemWatch
from modeldrop.plugin.outcomes import GateTracker, is_subtest, reason_of, skip_here
from modeldrop.plugin.reuse import resumable, resume_broken, upstream_verdict
from modeldrop.plugin.session import (
    EVIDENCE_KEY,
    FACTS_KEY,
    POOL_KEY,
    SESSION_KEY,
    GateSession,
    evidence_for,
    facts_of,
    gate_id,
    ledger_of,
    node_pool_of,
    pass_cache_of,
    run_config_of,
    run_folder_of,
    session_of,
)
from modeldrop.plugin.start import keep_cache_out_of_package, start_run

GATE_MARKER = "gate(name, per_node_from=None): a phase gate of the bootstrap (see modeldrop.gatetable)"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the config flags, --env-file and the limit ini keys."""
    options.add_options(parser)
    bounds.add_ini(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the gate marker; for a gate run build the config, run folder and ledger."""
    loggers.install()  # before any of the run's threads can create a logger (see modeldrop/loggers.py)
    if not any(line.startswith(("gate(", "gate:")) for line in config.getini("markers")):
        config.addinivalue_line("markers", GATE_MARKER)
    if hasattr(config, "workerinput") or not options.is_gate_run(config):
        return
    options.refuse_xdist(config)
    gs, warning = start_run(config)
    keep_cache_out_of_package(config)
    config.stash[SESSION_KEY] = gs
    config.pluginmanager.register(RunHooks(config, gs), "modeldrop-run")
    config.pluginmanager.register(BoundsHooks(config, gs), "modeldrop-bounds")
    if gs.scratch is None:
        config.pluginmanager.register(ItemWatch(config), "modeldrop-item-watch")
    if gs.scratch is None and reporting.setup_html(config, gs):
        config.pluginmanager.register(HtmlHooks(gs), "modeldrop-html")
    if warning:
        gs.ledger.warning(warning)
        config.issue_config_time_warning(pytest.PytestWarning(warning), stacklevel=2)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize per-node gates with k = per_node_from..N (ids node2, node3, …)."""
    cfg = run_config_of(metafunc.config)
    ks = ordering.per_node_ks(metafunc, len(cfg.nodes) if cfg else 0)
    if ks is not None:
        metafunc.parametrize("k", ks, ids=[f"node{k}" for k in ks])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before -k: gate ids become keywords and user properties; inactive gates are deselected."""
    ordering.label_items(items)
    gs = session_of(config)
    if gs is None:
        if any(it.get_closest_marker("gate") for it in items) and not hasattr(config, "workerinput"):
            raise pytest.UsageError("gate tests run as `pytest gates/ --model org/name` "
                                    "(self-tests: `pytest tests_selftest/`)")
        return
    ordering.drop_inactive(gs, config, items)


class RunHooks:
    """Gate ordering, skip-with-reason, outcome recording and the ledger for one gate run."""

    def __init__(self, config: pytest.Config, gs: GateSession):
        self.config = config
        self.gs = gs
        self.tracker = GateTracker(config, gs)
        self.interrupted = ""
        self.exits = bounds.Exits(gs)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """After -k: sort by the gate order, count selected items, add default timeouts."""
        ordering.order_selected(self.gs, items)
        self.tracker.items_left = dict(self.gs.selected)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Skip a gate (before its fixtures) when blocked, missing a reusable upstream, or reused."""
        gate = gate_id(item)
        if gate is None:
            self._gate_benchmark(item)
            return
        gs, ledger, tracker = self.gs, self.gs.ledger, self.tracker
        if tracker.start_gate(gate):
            reporting.refresh_html(self.config, gs, regenerate=True)
        verdict = upstream_verdict(gs, self.config, gate)
        if verdict is not None:
            kind, reason, root = verdict
            tracker.skip_as(item.nodeid, kind, root)
            skip_here(reason)
        if ledger.outcome(gate) == "reused":  # another item of a gate already reused
            tracker.skip_as(item.nodeid, "reused")
            skip_here(ledger.reason(gate))
        chain = gatetable.resume_chain(gate)
        if gs.cfg.resume_bootstrap and not resume_broken(gs, chain) and ledger.outcome(gate) is None:
            rec, why = resumable(gs, self.config, gate)
            if rec is not None:
                tracker.skip_as(item.nodeid, "reused")
                ledger.gate_reused(gate, rec.time, rec.run_id, rec.summary)
                skip_here(f"reused pass from {utc_minute(rec.time)} (run {rec.run_id})")
            ledger.resume_from(gate, why)

    def _gate_benchmark(self, item: pytest.Item) -> None:
        """Benchmarks do not run after a gate of this session failed or was skipped."""
        bad = self.gs.ledger.first_bad_gate()
        if item.get_closest_marker("bench") is not None and bad is not None:
            root = self.gs.ledger.root_cause(bad)
            skip_here(f"blocked by {root[0]} ({root[1]}): {root[2]}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        """Attach the evidence queued during this phase to its report."""
        rep = yield
        ev = item.stash.get(EVIDENCE_KEY, None)
        extras = ev.drain() if ev is not None else []
        if extras:
            rep.extras = list(getattr(rep, "extras", [])) + extras
        lhtml.redact_report(rep, self.gs.secrets)  # before the terminal, the ledger or pytest-html see it
        return rep

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Record item outcomes (after subtests have adjusted the parent); finish a gate on its last item."""
        if is_subtest(report):
            return
        self.exits.record_stops()
        props = dict(report.user_properties)
        gate, bench = props.get("gate"), props.get("bench")
        gate = gate if gate in self.gs.order else None
        if gate is None and bench is None:
            return
        finished = self.tracker.item_report(report, gate, bench)
        if finished is not None:
            reporting.update_metadata(self.config, self.gs)
            reporting.after_item(self.config, self.gs)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Environment table (pytest-metadata) and the live HTML ledger."""
        reporting.update_metadata(self.config, self.gs)
        reporting.start_html(self.config, self.gs)
        reporting.refresh_html(self.config, self.gs)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        """Ctrl-C or SIGTERM: from here on a second one is noted, not raised, so the cleanup finishes."""
        self.interrupted = self.exits.interrupted(excinfo.value)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Profile update on a green bootstrap, the last ledger records with the exit status (EXIT_BLOCKED for a
        run pytest calls OK that verified nothing or skipped a gate for its upstream), close the nodes."""
        gs = self.gs
        if gs.scratch is None:  # --collect-only is a look at the gates, not a run: nothing to record
            self._end_run(session, exitstatus)
        if gs.pool is not None:
            try:
                gs.pool.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self.exits.close()

    def _end_run(self, session: pytest.Session, exitstatus: int) -> None:
        gs = self.gs
        running = gs.ledger.running()
        interrupted = self.interrupted or (f"session ended while {running[0]} was running" if running else "")
        if gs.ledger.green() and not gs.cfg.audit:
            reporting.profile_update(gs)
        try:
            self.exits.drain()
        finally:
            # interrupted: pytest's code for it, also when the interrupt came before pytest could set the session's
            status = (int(exitstatus) or int(pytest.ExitCode.INTERRUPTED)) if interrupted else \
                gs.ledger.exit_status(int(exitstatus))
            session.exitstatus = status
            gs.ledger.end(status, interrupted)
        reporting.update_metadata(self.config, gs)
        reporting.refresh_html(self.config, gs)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """--collect-only: its scratch reports dir goes (nothing of a look at the gates is kept)."""
        if self.gs.scratch is not None:
            shutil.rmtree(self.gs.scratch, ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """The end-of-run summary (result, gates, where the model serves, benchmarks), where the run folder is and
        what to run next; nothing for --collect-only."""
        if self.gs.scratch is not None:
            return
        f = self.gs.ledger.fields()
        terminalreporter.write_sep("-", "modeldrop")
        for line in self.gs.ledger.summary_lines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"run folder: {self.gs.folder.path}")
        terminalreporter.write_line(f"handoff:    {self.gs.folder.path / 'handoff.md'}")
        for line in block_lines(f, ("LAST_PASS_PHASE", "KNOWN_BLOCKER", "NEXT_COMMAND")):
            terminalreporter.write_line(line)


class LimitReached(pytest.fail.Exception, DeadlineExceeded):
    """A setup or teardown limit: pytest's failure outcome (recorded and cached like any, no traceback) that no
    `except Exception` in the library swallows."""


def _limit_reached(message: str) -> BaseException:
    return LimitReached(message, pytrace=False)


class BoundsHooks:
    """Bounded fixture setup and teardown (pytest-timeout bounds only the test function)."""

    def __init__(self, config: pytest.Config, gs: GateSession):
        self.config, self.gs = config, gs

    def _limit(self, name: str) -> float:
        return float(self.config.getini(name))

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: pytest.FixtureRequest) -> Any:
        with alarm(self._limit("modeldrop_fixture_timeout"), f"setup of fixture {fixturedef.argname}",
                   _limit_reached):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        with alarm(self._limit("modeldrop_teardown_timeout"), f"teardown after {item.name}", _limit_reached):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Any:
        """An interrupted run tears its session fixtures down here (the cluster stop): bounded too."""
        try:
            with alarm(self._limit("modeldrop_teardown_timeout"), "session teardown", _limit_reached):
                return (yield)
        except DeadlineExceeded as exc:
            bounds.session_teardown_overran(self.gs, exc)
            return None


class HtmlHooks:
    """pytest-html hooks, registered only when pytest-html is active."""

    def __init__(self, gs: GateSession):
        self.gs = gs

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Extras other plugins added after the report was made (pytest-html's `extras` fixture) are masked
        too, before pytest-html escapes and encodes them (its own hook runs last)."""
        lhtml.redact_report(report, self.gs.secrets)

    def pytest_html_report_title(self, report: Any) -> None:
        report.title = f"modeldrop ledger: {self.gs.cfg.model_id} ({self.gs.folder.run_id})"

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(1, lhtml.gate_header())
        cells.insert(2, lhtml.started_header())

    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        gate = dict(getattr(report, "user_properties", [])).get("gate")
        if gate and report.skipped and reason_of(report).startswith("reused pass from"):
            gate = f"{gate} (reused)"
        cells.insert(1, lhtml.gate_cell(gate))
        cells.insert(2, lhtml.started_cell(getattr(report, "start", None)))

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str],
                                    session: pytest.Session) -> None:
        reporting.prefix_updater(self.gs)(prefix)


__all__ = ["SESSION_KEY", "FACTS_KEY", "POOL_KEY", "GateSession", "gate_id", "evidence_for", "run_config_of",
           "run_folder_of", "ledger_of", "pass_cache_of", "node_pool_of", "facts_of", "session_of"]

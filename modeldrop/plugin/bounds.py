"""Limits where pytest-timeout does not reach, and the exit paths of an interrupted run.

- `add_ini(parser)`: `modeldrop_fixture_timeout` (one fixture's setup), `modeldrop_teardown_timeout` (one
  test's teardown, session fixtures included: the cluster stop), `modeldrop_gate_timeouts` (`kind=seconds`
  lines overriding a kind of gate's limit from the gate table, e.g. `download=28800` for a slow link).
- `bound(item, default_s, kind)`: the item's timeout marker unless it has one (benchmark cases get
  `BENCH_CASE_TIMEOUT_S`). `gate_limit(config, kind)`: a kind of gate's limit as `bound` sets it (the
  download gates give hf a limit that follows it).
- The hooks (`BoundsHooks` in `__init__`) bound fixture setup, each teardown and the session teardown of an
  interrupted run with `modeldrop.deadlines.alarm`; a session teardown that runs out is a ledger warning
  (`session_teardown_overran`), not a crash.
- `Exits`: SIGTERM unwinds like Ctrl-C; after the first interrupt further SIGINT/SIGTERM are noted, not
  raised; `drain()` stops, by pid after an identity check, every remote process the run started and did not
  see end (`modeldrop.cleanup.REGISTRY`) and records it in the ledger; `record_stops()` records the ones a
  gate stopped itself (a command that timed out or was cut short), after each test.
"""

from __future__ import annotations

import sys

import pytest

from modeldrop import interrupts
from modeldrop.cleanup import REGISTRY
from modeldrop.deadlines import FIXTURE_SETUP_S, TEARDOWN_S, DeadlineExceeded
from modeldrop.gatetable import BY_KIND
from modeldrop.plugin.session import GateSession


def add_ini(parser: pytest.Parser) -> None:
    """Register the limit ini keys (see the module docstring)."""
    parser.addini("modeldrop_fixture_timeout", f"seconds one fixture's setup may take (default {FIXTURE_SETUP_S})",
                  default=str(FIXTURE_SETUP_S))
    parser.addini("modeldrop_gate_timeouts", "per kind of gate, `kind=seconds` lines overriding its limit "
                  "(e.g. download=28800)", type="linelist", default=[])
    parser.addini("modeldrop_teardown_timeout", "seconds one test's teardown may take, session fixtures included "
                  f"(default {TEARDOWN_S:g})", default=str(TEARDOWN_S))


def bound(item: pytest.Item, default_s: float | None, kind: str | None = None) -> None:
    """Give the item its default timeout unless it has one; modeldrop_gate_timeouts overrides a kind's."""
    if default_s is None or item.get_closest_marker("timeout") is not None:
        return
    item.add_marker(pytest.mark.timeout(_limit(item.config, kind, default_s)))


def gate_limit(config: pytest.Config, kind: str) -> float:
    """The limit of every gate of `kind`: its modeldrop_gate_timeouts line, else the gate table's."""
    return _limit(config, kind, BY_KIND[kind].timeout_s)


def _limit(config: pytest.Config, kind: str | None, default_s: float) -> float:
    overrides = dict(line.split("=", 1) for line in config.getini("modeldrop_gate_timeouts") if "=" in line)
    try:
        return float(overrides.get(kind or "", default_s))
    except ValueError:
        raise pytest.UsageError(f"modeldrop_gate_timeouts: {kind}={overrides[kind]!r} is not a number of "
                                "seconds") from None


def session_teardown_overran(gs: GateSession, exc: DeadlineExceeded) -> None:
    """Say so on the terminal and in the ledger (the hook returns normally: the run still ends cleanly)."""
    sys.stderr.write(f"\nmodeldrop: {exc}; see the run folder's exo/ records for what may still run\n")
    gs.ledger.warning(str(exc))


class Exits:
    """SIGTERM as Ctrl-C, a cleanup that a second Ctrl-C cannot cut short, and the remote-process drain."""

    def __init__(self, gs: GateSession):
        self.gs = gs
        self.extra_signals: list[str] = []
        self._restore = interrupts.install(self._note_signal)  # the first interrupt raises, later ones are noted

    def interrupted(self, exc: BaseException | None) -> str:
        """The ledger's words for the interrupt (further ones are already only noted)."""
        return interrupts.interrupt_reason(exc)

    def _note_signal(self, name: str) -> None:
        self.extra_signals.append(name)
        sys.stderr.write(f"\nmodeldrop: {name} again: still stopping what the run started on the nodes "
                         "(each step has a deadline)\n")

    def record_stops(self) -> None:
        """The remote processes stopped mid-run (`REGISTRY.stop_one`) since the last call go to the ledger."""
        stopped = REGISTRY.take_stopped()
        if stopped:
            self.gs.ledger.cleanup(stopped)

    def drain(self) -> None:
        """Stop every remote process the run started and did not see end; the ledger says what happened."""
        self.record_stops()
        if REGISTRY.pending():
            self.gs.ledger.cleanup(REGISTRY.drain())
        if self.extra_signals:
            self.gs.ledger.warning(f"{', '.join(self.extra_signals)} during cleanup: ignored until it finished")

    def close(self) -> None:
        """Give the signals back."""
        self._restore()

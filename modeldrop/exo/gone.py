"""Long waits on a cluster end as soon as one of its exo processes dies, not when their own bounds pass.

A node whose exo was killed (the OOM killer, jetsam, a person) leaves the other nodes waiting: a chat through a
surviving node hangs on the dead ring member until its timeout (120 s by default), and the other nodes' /state
keeps the instance until EXO notices the peer left (about 45 s on real EXO). The placement and chat gates pass
`ExoCluster.gone` to their waits, and this module asks it every GONE_EVERY_S.

Contract:
- `Gone` is `() -> {k: "pid N"}`: the cluster's exo processes found dead (empty while all run; a node that cannot
  be asked is not dead, and neither is a `gone` that raises: `ask(gone)`).
- `Due(gone, every_s, clock)`: `due.check(now)` asks `gone` when `every_s` passed since the last time (or since
  the start) and returns what it found; `due.found` keeps the first finding.
- `CallsInFlight(gone, every_s)`: `calls.all(fns, what, bound_s)` runs every `fn()` at once (HTTP calls through
  `httpdeadline` sessions) while `gone` is asked every `every_s`; when it finds a dead exo the connections of the
  calls still open are cut, those calls give None, and `calls.found` says which exo.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from modeldrop.httpdeadline import Deadline, TotalTimeout, deadline
from modeldrop.pernode import each, together

T = TypeVar("T")
Gone = Callable[[], dict[int, str]]
GONE_EVERY_S = 5.0  # how often a long wait asks whether a node's exo process died


def ask(gone: Gone) -> dict[int, str]:
    """What `gone()` finds; {} when it cannot say (an error in the look never ends a wait by itself)."""
    try:
        return dict(gone() or {})
    except Exception:  # noqa: BLE001 - unknown is not dead
        return {}


class Due:
    """`gone` asked at most every `every_s` of a polling loop's clock (see the module docstring)."""

    def __init__(self, gone: Gone | None, every_s: float, start: float):
        self.gone, self.every_s, self.last = gone, every_s, start
        self.found: dict[int, str] = {}

    def check(self, now: float) -> dict[int, str]:
        """What `gone` finds when it is time to ask (else what was found before)."""
        if self.gone is not None and not self.found and now - self.last >= self.every_s:
            self.last = now
            self.found = ask(self.gone)
        return self.found


class CallsInFlight:
    """Calls that a dead exo on any node cuts short (see the module docstring)."""

    def __init__(self, gone: Gone | None, every_s: float = GONE_EVERY_S):
        self.gone, self.every_s = gone, every_s
        self.found: dict[int, str] = {}
        self._done = threading.Event()
        self._open: list[Deadline] = []
        self._lock = threading.Lock()

    def all(self, calls: list[Callable[[], T]], what: str, bound_s: float) -> list[T | None]:
        """Every call at once, `gone` asked meanwhile (without `gone`: just the calls); each call's result, None
        where a dead exo cut it. `bound_s` is a backstop past the calls' own bounds: reached, it raises."""
        def run_all() -> list[T | None]:
            try:
                return list(each(range(len(calls)), lambda i: self._run(calls[i], what, bound_s)).values())
            finally:
                self._done.set()
        return run_all() if self.gone is None else together(run_all, self._watch)[0]

    def _run(self, fn: Callable[[], T], what: str, bound_s: float) -> T | None:
        """fn() with its connections cuttable by `_watch`; None when they were cut (a call already returned keeps
        its result)."""
        try:
            with deadline(bound_s, what) as d:
                with self._lock:
                    self._open.append(d)
                    if self.found:
                        d.expire()
                return fn()
        except TotalTimeout:
            if self.found:
                return None
            raise

    def _watch(self) -> None:
        """Ask `gone` every `every_s` until the calls ended; on a finding, cut every call still open."""
        while self.gone is not None and not self._done.wait(self.every_s):
            found = ask(self.gone)
            if found:
                with self._lock:
                    self.found = found
                    for d in self._open:
                        d.expire()
                return

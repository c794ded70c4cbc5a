"""Limits for what pytest-timeout does not bound (it bounds only the test function), nested like the rest:
an outer limit always leaves the inner cleanup its time.

Contract:
- `BENCH_CASE_TIMEOUT_S`: one benchmark case; `FIXTURE_SETUP_S`: one fixture's setup; `TEARDOWN_S`: one
  test's teardown, the session fixtures' included (stopping a 4-node cluster and its canary one by one).
- `alarm(seconds, what, error=DeadlineExceeded)`: a context that raises `error("what still running after …")`
  in the main thread after `seconds` (SIGALRM timer); it restores an enclosing alarm on exit, and where the
  enclosing one would fire first it leaves it alone (the outer limit is the tighter one). Elsewhere than the
  main thread, a no-op.
- `DeadlineExceeded` is a BaseException, like pytest's own outcomes: the `except Exception` of an evidence
  collector (`call_safely`), a poll or a best-effort step never swallows it, so a limit ends the work it
  bounds. (The plugin raises a subclass that is also pytest's failure outcome, so pytest still records it.)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from modeldrop.exo.launcher import STOP_GRACE_S

PROBE_TIMEOUT_S = 60
CLEANUP_S = 300  # the run's own cleanup drain, evidence collection
MAX_NODES = 4
BENCH_CASE_TIMEOUT_S = 3600
FIXTURE_SETUP_S = 900
# stop_all stops each node's cluster process and canary in turn: each a stop probe (grace + round trip)
TEARDOWN_S = 2 * MAX_NODES * (STOP_GRACE_S + PROBE_TIMEOUT_S) + CLEANUP_S


class DeadlineExceeded(BaseException):
    """A bounded wait ran out (see `alarm`); not an Exception, so `except Exception` lets it through."""


@contextmanager
def alarm(seconds: float, what: str,
          error: Callable[[str], BaseException] = DeadlineExceeded) -> Iterator[None]:
    """Raise error(message) after `seconds` inside the block (see the module docstring)."""
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL) if _main() else (0.0, 0.0)
    if not _main() or seconds <= 0 or (outer_left and outer_left <= seconds):
        yield
        return
    previous = signal.getsignal(signal.SIGALRM)
    t0 = time.monotonic()

    def fire(signum: int, frame: object) -> None:
        raise error(f"{what} still running after {seconds:g}s")

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, outer_left - (time.monotonic() - t0)))


def _main() -> bool:
    return threading.current_thread() is threading.main_thread()

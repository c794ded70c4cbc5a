"""Polling with a deadline: the suite never sleeps a fixed time to synchronise.

`poll(fn, done, timeout_s, interval_s)` calls `fn()` until `done(value)` is true or the deadline
passes and returns a `PollResult` with the last value seen, whether it finished, how long it took
and how many samples were taken. Exceptions from `fn` are caught and kept as the last value's
error so a flaky endpoint does not end the wait early; `stop(value)` ends it early (a fast fail).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class PollResult(Generic[T]):
    """What a poll ended with: done (condition met), stopped (stop condition met), or neither (timed out)."""

    value: T | None
    done: bool
    stopped: bool
    elapsed_s: float
    samples: int
    last_error: str | None = None

    @property
    def timed_out(self) -> bool:
        return not self.done and not self.stopped


def poll(fn: Callable[[], T], done: Callable[[T], bool], timeout_s: float, interval_s: float = 0.5,
         stop: Callable[[T], bool] | None = None, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> PollResult[T]:
    """Call fn until done(value) or stop(value) or timeout; always at least one sample."""
    t0 = clock()
    samples, value, err = 0, None, None
    while True:
        try:
            value = fn()
            err = None
            samples += 1
            if done(value):
                return PollResult(value, True, False, clock() - t0, samples)
            if stop is not None and stop(value):
                return PollResult(value, False, True, clock() - t0, samples)
        except Exception as e:  # noqa: BLE001 - kept as evidence, the poll goes on
            samples += 1
            err = f"{type(e).__name__}: {e}"
        left = timeout_s - (clock() - t0)
        if left <= 0:
            return PollResult(value, False, False, clock() - t0, samples, err)
        sleep(min(interval_s, left))


def call_safely(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """(fn(), None) or (None, 'Type: message') — for one-shot evidence gathering."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"

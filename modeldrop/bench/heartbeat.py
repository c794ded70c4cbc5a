"""Heartbeat lines while a benchmark case runs: every few requests and at least every 15 s.

Contract
--------
`with Heartbeat(phase, case_id, total, sink=...) as hb: ... hb.tick(tokens)` emits
`bench <phase> <case> <done>/<total> elapsed <s>s rate <tok/s> tok/s (<n> req in last <s>s)`
to the `modeldrop.bench` logger and to `sink` (default: `sys.__stderr__`, which pytest's capture
does not swallow; the pytest layer passes the terminal reporter's `write_line`). A line goes out
after every `every_n` ticks and, from a daemon timer thread, whenever `every_s` seconds pass
without one, so a stalled case still shows it is alive. `tick` is thread-safe.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger("modeldrop.bench")

Sink = Callable[[str], None]


def stderr_sink(line: str) -> None:
    """Write to the real stderr, past pytest's capture, prefixed with the UTC time."""
    stream = sys.__stderr__
    if stream is not None:
        stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")
        stream.flush()


class Heartbeat:
    MIN_RATE_WINDOW_S = 2.0
    def __init__(self, phase: str, case_id: str, total: int, *, sink: Sink | None = stderr_sink,
                 every_n: int = 5, every_s: float = 15.0):
        self.phase, self.case_id, self.total = phase, case_id, total
        self.sink, self.every_n, self.every_s = sink, every_n, every_s
        self.done = 0
        self.tokens = 0
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._last_emit = self._t0
        self._window = (0, 0)  # (done, tokens) at last emit
        self._timer: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        self._t0 = self._last_emit = time.perf_counter()
        self.emit("start")
        self._timer = threading.Thread(target=self._watch, name="bench-heartbeat", daemon=True)
        self._timer.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=2)
        self.emit("done" if et is None else f"aborted ({et.__name__})")

    def tick(self, tokens: int = 0) -> None:
        """One request finished with `tokens` output tokens."""
        with self._lock:
            self.done += 1
            self.tokens += tokens
            due = self.done % self.every_n == 0
        if due:
            self.emit()

    def _watch(self) -> None:
        while not self._stop.wait(timeout=min(1.0, self.every_s / 4)):
            if time.perf_counter() - self._last_emit >= self.every_s:
                self.emit("waiting")

    def emit(self, note: str = "") -> str:
        with self._lock:
            now = time.perf_counter()
            span = now - self._last_emit
            d0, k0 = self._window
            elapsed = now - self._t0
            # the rate over the last window, unless the window is too short to mean anything
            rate = ((self.tokens - k0) / span if span >= self.MIN_RATE_WINDOW_S
                    else (self.tokens / elapsed if elapsed > 0 else 0.0))
            line = (f"bench {self.phase} {self.case_id} {self.done}/{self.total} elapsed {elapsed:.1f}s "
                    f"rate {rate:.1f} tok/s ({self.done - d0} req in last {span:.1f}s)"
                    + (f" {note}" if note else ""))
            self._last_emit, self._window = now, (self.done, self.tokens)
            self.lines.append(line)
        log.info(line)
        if self.sink is not None:
            try:
                self.sink(line)
            except Exception:  # a broken terminal must not break a measurement
                log.debug("heartbeat sink failed", exc_info=True)
        return line

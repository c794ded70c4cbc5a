"""Progress lines of a long wait, in the heartbeat format: the gate, the node, what is waited for, what was
last seen, how long it has waited and its bound.

Contract
--------
`Progress(sink, gate, bound_s)` is one wait of a gate (the sink adds the time stamp: the plugin's live writer);
`restart()` starts the wait's clock (the library's waits call it first). `seen(node, what, last)` hands the
sink `<gate> <node>: waiting for <what>; last seen <last>; <elapsed>s of <bound>s` when that node's previous
line is at least `every_s` (EVERY_S, 10 s) old, counting from the wait's start: a wait shorter than `every_s`
prints nothing, a longer one at most one line per node per `every_s`.
A sink that raises never breaks the wait. `Progress.off()` prints nothing (callers without a terminal).
`amount(done, total, elapsed_s)` says bytes, rate and ETA as the download heartbeat does.
Plain Python: the library's waits take a Progress; the pytest layer makes it with its live writer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Sink = Callable[[str], None]
EVERY_S = 10.0  # at most one line per node per this many seconds (and none for a shorter wait)
MiB = 1024 * 1024


def line(gate: str, node: str, what: str, last: str, elapsed_s: float, bound_s: float | None) -> str:
    """One progress line (without its time stamp); `node` may be empty (a wait of the whole gate)."""
    bound = f" of {bound_s:.0f}s" if bound_s else ""
    head = f"{gate} {node}" if node else gate
    return f"{head}: waiting for {what}; last seen {last or 'nothing yet'}; {elapsed_s:.0f}s{bound}"


def size(n: float) -> str:
    """`812.0 MiB`, `3.21 GiB` (the download heartbeat's units)."""
    return f"{n / MiB / 1024:.2f} GiB" if n >= 1024 * MiB else f"{n / MiB:.1f} MiB"


def amount(done: float, total: float | None, elapsed_s: float) -> str:
    """`1.20 GiB of 3.00 GiB (40%), 210.3 MiB/s, ETA 0:09` (total unknown: `1.20 GiB, 210.3 MiB/s`)."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if not total:
        return f"{size(done)}, {rate / MiB:.1f} MiB/s"
    eta = max(0.0, total - done) / rate if rate > 0 else None
    left = f", ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else ""
    return f"{size(done)} of {size(total)} ({100 * done / total:.0f}%), {rate / MiB:.1f} MiB/s{left}"


class Progress:
    """One wait's progress lines (see the module docstring); thread-safe."""

    def __init__(self, sink: Sink | None, gate: str, bound_s: float | None = None, every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.sink, self.gate, self.bound_s, self.every_s, self.clock = sink, gate, bound_s, every_s, clock
        self.t0 = clock()
        self.lines: list[str] = []
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def off(cls, gate: str = "") -> Progress:
        """A Progress that prints nothing."""
        return cls(None, gate)

    def restart(self) -> Progress:
        """The wait starts now: elapsed counts from here and no node is due before `every_s` (a library wait calls
        it first, so a Progress made before the work it waits on measures the wait itself)."""
        with self._lock:
            self.t0 = self.clock()
            self._last.clear()
        return self

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.t0

    def seen(self, node: str, what: str, last: str, bound_s: float | None = None) -> str | None:
        """Print the line for `node` when it is due (see the module docstring); returns it, else None."""
        if self.sink is None:
            return None
        now = self.clock()
        with self._lock:
            if now - self._last.get(node, self.t0) < self.every_s:
                return None
            self._last[node] = now
            text = line(self.gate, node, what, last, now - self.t0, bound_s or self.bound_s)
            self.lines.append(text)
        try:
            self.sink(text)
        except Exception:  # noqa: BLE001 - a broken terminal must not break a wait
            pass
        return text

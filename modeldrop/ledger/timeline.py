"""The run's timeline: every gate and each node's download as a bar on one time axis (`plots/timeline.png`).

`spans(records, now)` turns ledger.jsonl records into `Span`s: a gate from its `gate_start` to its
pass/fail/skip (a gate still running ends at `now`), a reused gate as a mark, each node's download from
its `download_start` to its `download_end`, a benchmark case over its duration. `render(records, path,
now)` draws them (matplotlib's object API, Agg, no pyplot state) and writes the PNG atomically, with
the spans drawn beside it as `<name>.json`; with no span it writes nothing.
`TimelineWriter(jsonl, png)` redraws in one background thread whenever `touch()` is called, at most once every
REDRAW_EVERY_S (touches in between make one redraw: a drawing costs a few tenths of a CPU second), and
`flush()` draws now and waits, so the picture follows the run and a failed or interrupted run keeps the last
one drawn.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modeldrop import atomic
from modeldrop.ledger.jsonl import read_jsonl

COLOURS = {"passed": "#2e9d48", "failed": "#d0342c", "skipped": "#a0a0a0", "reused": "#8fb8de",
           "running": "#f0a030", "download": "#3b6fb6", "download_failed": "#d0342c"}
_END_EVENTS = {"pass": "passed", "fail": "failed", "skip": "skipped"}
_RENDER_LOCK = threading.Lock()
REDRAW_EVERY_S = 5.0


@dataclass
class Span:
    """One bar: `label` (row), epoch start/end, `outcome` (passed, failed, skipped, reused, running,
    download, download_failed)."""

    label: str
    start: float
    end: float
    outcome: str


def spans(records: Iterable[dict[str, Any]], now: float | None = None) -> list[Span]:
    """Gate and download spans in the order they started."""
    now = time.time() if now is None else now
    out: dict[str, Span] = {}
    for r in records:
        ev, t = r.get("event"), float(r.get("t") or now)
        if ev == "gate_start":
            out[r["gate"]] = Span(r["gate"], t, now, "running")
        elif ev in _END_EVENTS and r.get("gate"):
            dur = float(r.get("duration_s") or 0.0)
            span = out.setdefault(r["gate"], Span(r["gate"], t - dur, t, "running"))
            span.end, span.outcome = t, _END_EVENTS[ev]
        elif ev == "bench" and r.get("item"):
            dur = float(r.get("duration_s") or 0.0)
            out["bench " + r["item"]] = Span("bench " + r["item"], t - dur, t, r.get("outcome") or "passed")
        elif ev == "reuse" and r.get("gate"):
            out[r["gate"]] = Span(r["gate"] + " (reused)", t, t, "reused")
        elif ev in ("download_start", "download_end") and r.get("node"):
            label = f"{r['node']} hf download"
            start = float(r.get("start") or t)
            span = out.setdefault(label, Span(label, start, now, "running"))
            if ev == "download_end":
                span.end = float(r.get("end") or t)
                span.outcome = "download" if r.get("rc") == 0 else "download_failed"
    return sorted(out.values(), key=lambda s: s.start)


def _figure(rows: list[Span], title: str) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t0 = min(s.start for s in rows)
    fig = Figure(figsize=(9, 0.32 * len(rows) + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, s in enumerate(rows):
        width = max(s.end - s.start, 0.05)
        ax.barh(i, width, left=s.start - t0, color=COLOURS.get(s.outcome, "#666666"),
                hatch="//" if s.outcome == "running" else None, edgecolor="#333333", linewidth=0.4)
        ax.text(s.start - t0 + width, i, f" {s.end - s.start:.1f}s", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), [s.label for s in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first gate started")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=9)
    return fig


def render(records: Iterable[dict[str, Any]], path: Path, now: float | None = None, title: str = "") -> Path | None:
    """Draw the timeline of `records` into `path` (atomically); None when there is nothing to draw."""
    rows = spans(records, now)
    if not rows:
        return None
    with _RENDER_LOCK:
        fig = _figure(rows, title or f"timeline ({time.strftime('%H:%M:%S', time.gmtime(now or time.time()))} UTC)")
        buf = io.BytesIO()
        fig.savefig(buf, dpi=90, bbox_inches="tight", format="png")
    atomic.write_bytes(path, buf.getvalue())
    atomic.write_bytes(path.with_suffix(".json"), json.dumps([asdict(s) for s in rows], indent=1).encode())
    return path


class TimelineWriter:
    """Redraws `png` from `jsonl` in a background thread after a `touch()`, at most every REDRAW_EVERY_S;
    `flush()` draws now (and ends the pacing, so no thread outlives the run's last picture by a pause).

    The drawing thread is not a daemon and lives only while redraws are asked for: the interpreter's exit
    waits for a draw in progress instead of freezing it inside matplotlib's C++ code (which aborts the process),
    and a limit (deadlines.alarm's SIGALRM) that fires during `flush()` interrupts the wait, not the drawing."""

    def __init__(self, jsonl: Path, png: Path):
        self.jsonl, self.png = Path(jsonl), Path(png)
        self._dirty = False
        self._state = threading.Lock()  # guards _dirty and _thread
        self._lock = threading.Lock()  # one draw at a time
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()  # set by flush(): no more pacing
        self.error: str | None = None

    def touch(self) -> None:
        """Ask for a redraw (coalesced); starts the drawing thread when none runs."""
        with self._state:
            self._dirty = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="timeline", daemon=False)
                self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._state:
                if not self._dirty:
                    self._thread = None
                    return
                self._dirty = False
            self.draw()
            self._closing.wait(REDRAW_EVERY_S)  # pacing: touches meanwhile make one redraw; flush() ends it

    def draw(self) -> Path | None:
        """Draw the picture from the records as they are now (errors kept in `error`, never raised)."""
        with self._lock:
            try:
                return render(read_jsonl(self.jsonl), self.png)
            except Exception as e:  # noqa: BLE001 - a picture must never break the run
                self.error = f"{type(e).__name__}: {e}"
                return None

    def flush(self) -> Path | None:
        """Draw now (the run's last picture) and wait for it; the path when there was something to draw. The
        wait is on an Event, not Thread.join: an interrupted join marks a running thread stopped, and the
        interpreter's exit would then not wait for it."""
        self._closing.set()
        done, box = threading.Event(), {}

        def run() -> None:
            box["path"] = self.draw()
            done.set()

        threading.Thread(target=run, name="timeline-flush", daemon=False).start()
        done.wait()
        return box.get("path")

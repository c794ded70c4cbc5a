"""The run's timeline: every gate and each node's download as a bar on one time axis (`plots/timeline.png`).

`spans(records, now)` turns ledger.jsonl records into `Span`s: a gate from its `gate_start` to its
pass/fail/skip (a gate still running ends at `now`), a reused gate as a mark, each node's download from
its `download_start` to its `download_end`, a benchmark case over its duration. `render(records, path,
now)` draws them with Pillow (a few CPU milliseconds a picture: it is redrawn all through the run) and writes the
PNG atomically, with the spans drawn beside it as `<name>.json`; with no span it writes nothing.
`TimelineWriter(jsonl, png)` redraws in one background thread whenever `touch()` is called, at most once every
REDRAW_EVERY_S (touches in between make one redraw), and
`flush()` draws now and waits, so the picture follows the run and a failed or interrupted run keeps the last
one drawn.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from modeldrop import atomic
from modeldrop.ledger.jsonl import read_jsonl

COLOURS = {"passed": "#2e9d48", "failed": "#d0342c", "skipped": "#a0a0a0", "reused": "#8fb8de",
           "running": "#f0a030", "download": "#3b6fb6", "download_failed": "#d0342c"}
_END_EVENTS = {"pass": "passed", "fail": "failed", "skip": "skipped"}
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


# the picture's geometry in pixels: a row per span, the axis below, the labels left of the bars
ROW_PX, PAD_PX, AXIS_PX, TITLE_PX, BAR_AREA_PX = 28, 10, 44, 24, 620
FONT_PX = 11
INK, GRID = "#333333", "#e4e4e4"


def _nice_step(span_s: float) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving at most 8 ticks over `span_s`."""
    base = 10 ** math.floor(math.log10(max(span_s, 1e-3)))
    for m in (0.1, 0.2, 0.5, 1, 2, 5, 10):
        if span_s / (base * m) <= 8:
            return base * m
    return base * 10


def _spaced(text: str) -> str:
    """`text` with its spaces doubled: the bundled font's space is 2 px wide at FONT_PX."""
    return text.replace(" ", "  ")


def _hatched(size: tuple[int, int], colour: str) -> Image.Image:
    """A bar's fill with diagonal stripes (a gate still running)."""
    tile = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(tile)
    for x in range(-size[1], size[0], 6):
        draw.line([(x, size[1]), (x + size[1], 0)], fill="#ffffff", width=1)
    return tile


def _picture(rows: list[Span], title: str) -> Image.Image:
    """The timeline drawn with Pillow: a row per span (label, bar, its seconds), seconds on the x axis."""
    font = ImageFont.load_default(size=FONT_PX)
    t0 = min(s.start for s in rows)
    total = max(max(s.end for s in rows) - t0, 0.5)
    label_px = max(int(font.getlength(_spaced(s.label))) for s in rows) + 2 * PAD_PX
    width, height = label_px + BAR_AREA_PX + 60, TITLE_PX + ROW_PX * len(rows) + AXIS_PX
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)

    def x_of(t: float) -> int:
        return label_px + round(t * BAR_AREA_PX / total)

    _axis(draw, font, x_of, total, TITLE_PX + ROW_PX * len(rows))
    draw.text((width // 2, TITLE_PX // 2), _spaced(title), fill=INK, font=font, anchor="mm")
    for i, s in enumerate(rows):
        _row(img, draw, font, s, TITLE_PX + i * ROW_PX, x_of(s.start - t0), x_of(s.end - t0), label_px)
    return img


def _axis(draw: ImageDraw.ImageDraw, font: Any, x_of: Callable[[float], int], total: float, axis_y: float) -> None:
    """The seconds axis under the rows: a tick, its label and a grid line every `_nice_step(total)`."""
    step = _nice_step(total)
    for i in range(int(total / step) + 1):
        x = x_of(i * step)
        draw.line([(x, TITLE_PX), (x, axis_y)], fill=GRID)
        draw.line([(x, axis_y), (x, axis_y + 4)], fill=INK)
        draw.text((x, axis_y + 6), f"{i * step:g}", fill=INK, font=font, anchor="mt")
    draw.line([(x_of(0), TITLE_PX), (x_of(0), axis_y), (x_of(total), axis_y)], fill=INK)
    draw.text(((x_of(0) + x_of(total)) // 2, axis_y + AXIS_PX - 6), _spaced("seconds since the first gate started"),
              fill=INK, font=font, anchor="mb")


def _row(img: Image.Image, draw: ImageDraw.ImageDraw, font: Any, s: Span, top: int, x0: int, x1: int,
         label_px: int) -> None:
    """One span's row: its label right-aligned left of the axis, its bar from x0 to x1, its seconds after it."""
    y0, y1 = top + 5, top + ROW_PX - 5
    x1 = max(x1, x0 + 2)
    colour = COLOURS.get(s.outcome, "#666666")
    if s.outcome == "running":
        img.paste(_hatched((x1 - x0, y1 - y0), colour), (x0, y0))
        draw.rectangle([x0, y0, x1, y1], outline=INK)
    else:
        draw.rectangle([x0, y0, x1, y1], fill=colour, outline=INK)
    mid = (y0 + y1) // 2
    draw.text((label_px - PAD_PX, mid), _spaced(s.label), fill=INK, font=font, anchor="rm")
    draw.text((x1 + 4, mid), f"{s.end - s.start:.1f}s", fill=INK, font=font, anchor="lm")


def render(records: Iterable[dict[str, Any]], path: Path, now: float | None = None, title: str = "") -> Path | None:
    """Draw the timeline of `records` into `path` (atomically); None when there is nothing to draw."""
    rows = spans(records, now)
    if not rows:
        return None
    img = _picture(rows, title or f"timeline ({time.strftime('%H:%M:%S', time.gmtime(now or time.time()))} UTC)")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    atomic.write_bytes(path, buf.getvalue())
    atomic.write_bytes(path.with_suffix(".json"), json.dumps([asdict(s) for s in rows], indent=1).encode())
    return path


class TimelineWriter:
    """Redraws `png` from `jsonl` in a background thread after a `touch()`, at most every REDRAW_EVERY_S;
    `flush()` draws now (and ends the pacing, so no thread outlives the run's last picture by a pause).

    The drawing thread is not a daemon and lives only while redraws are asked for: the interpreter's exit
    waits for a draw in progress instead of freezing it inside Pillow's C code mid-write,
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

"""The run's live lines on the terminal: progress lines and heartbeats, time-stamped, past pytest's capture.

- `live_writer(config)` is the session's one `LiveWriter` (kept on `config.stash`): `writer(line)` prints
  `2026-06-22T10:00:00Z <line>` at once, from any thread, through the terminal reporter with capture suspended
  (as live logging does). Under `-q` it prints nothing (`-q` shows pytest's own output only); it still
  remembers the line.
- `ItemWatch` (registered for gate runs): while a gate or benchmark item runs (setup, call and teardown), a
  daemon thread prints `<gate>: waiting for its verdict (<phase>); last seen <the last progress line, or none>;
  <elapsed>s of <limit>s` whenever the writer has printed nothing for `progress.EVERY_S` and a second, so no
  phase of a run is silent much longer than that, whatever it waits on. The waits that know more (downloads,
  placement, startup, cluster join, canary, manifest and hash checks, benchmark cases) print their own lines
  through the same writer (`modeldrop.progress`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from modeldrop import progress
from modeldrop.ledger.handoff import one_line
from modeldrop.plugin.session import gate_id

WRITER_KEY = pytest.StashKey["LiveWriter"]()


class LiveWriter:
    """Time-stamped lines to the terminal at once (thread-safe); silent under -q."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.quiet = config.get_verbosity() < 0
        self.lock = threading.Lock()
        self.clock = time.monotonic
        self.last_t = self.clock()  # the last line of any kind
        self.progress_t: float | None = None  # the last line of a wait (not the item watch's own)
        self.progress_line = ""

    def __call__(self, line: str, watch: bool = False) -> None:
        plugins = self.config.pluginmanager  # looked up now: the writer may be made before the reporter exists
        reporter, capman = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
        with self.lock:
            self.last_t = self.clock()
            if not watch:
                self.progress_t, self.progress_line = self.last_t, line
            if self.quiet or reporter is None:
                return
            stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}"
            if capman is not None:
                with capman.global_and_fixture_disabled():
                    reporter.write_line(stamped)
            else:
                reporter.write_line(stamped)


def live_writer(config: pytest.Config) -> LiveWriter:
    """The session's LiveWriter (made on first use)."""
    writer = config.stash.get(WRITER_KEY, None)
    if writer is None:
        writer = config.stash[WRITER_KEY] = LiveWriter(config)
    return writer


def item_label(item: pytest.Item) -> str:
    """`placement`, `node2_verify`, or `bench concurrency-c4` for a benchmark case."""
    gate = gate_id(item)
    if gate is not None:
        return gate
    case = getattr(getattr(item, "callspec", None), "id", None)
    return f"bench {case or item.name}"


def item_limit(item: pytest.Item) -> float | None:
    """The item's timeout marker (the plugin gives every gate and case one), else None."""
    m = item.get_closest_marker("timeout")
    try:
        return float(m.args[0]) if m is not None and m.args else None
    except (TypeError, ValueError):
        return None


class ItemWatch:
    """Prints a line for the running item when nothing was printed for `every_s` (see the module docstring)."""

    def __init__(self, config: pytest.Config, every_s: float = progress.EVERY_S + 1.0):
        self.writer = live_writer(config)
        self.every_s = every_s  # a second more than a wait's own period: its own lines come first
        self.current: tuple[str, float | None, float] | None = None  # label, limit, start (monotonic)
        self.phase = "setup"
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
        if gate_id(item) is None and item.get_closest_marker("bench") is None:
            return (yield)
        self.current = (item_label(item), item_limit(item), time.monotonic())
        self._start()
        try:
            return (yield)
        finally:
            self.current = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.phase = "setup: its fixtures"

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        self.phase = "call"

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        self.phase = "teardown"

    def _start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="modeldrop-item-watch", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.tick(time.monotonic())

    def tick(self, now: float) -> str | None:
        """Print the running item's line when the writer has been quiet for `every_s`; returns it, else None."""
        cur = self.current
        if cur is None:
            return None
        label, limit, t0 = cur
        quiet_since = max(self.writer.last_t, t0)
        if now - quiet_since < self.every_s:
            return None
        seen_t = self.writer.progress_t
        last = (f"\"{one_line(self.writer.progress_line, 72)}\" {now - seen_t:.0f}s ago"
                if seen_t is not None and seen_t >= t0 else "no progress line yet")
        what = ("the case to finish" if label.startswith("bench ") else "its verdict") + f" ({self.phase})"
        text = progress.line(label, "", what, last, now - t0, limit)
        self.writer(text, watch=True)
        return text

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.stop.set()

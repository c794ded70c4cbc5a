"""The live writer (time-stamped lines past capture, silent under -q) and the item watch (a line for the running
gate or benchmark case whenever nothing was printed for a period, naming its phase, last line and limit)."""

from __future__ import annotations

import re
from types import SimpleNamespace

from modeldrop.plugin.live import ItemWatch, LiveWriter


class Reporter:
    def __init__(self):
        self.lines: list[str] = []

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def config(verbosity: int, reporter: Reporter | None) -> SimpleNamespace:
    plugins = {"terminalreporter": reporter, "capturemanager": None}
    return SimpleNamespace(get_verbosity=lambda: verbosity, stash={},
                           pluginmanager=SimpleNamespace(getplugin=plugins.get))


def test_lines_are_stamped_and_minus_q_prints_none():
    rep = Reporter()
    LiveWriter(config(0, rep))("node1 download: 1.0 MiB")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ node1 download: 1\.0 MiB", rep.lines[0]), rep.lines
    quiet_rep = Reporter()
    quiet = LiveWriter(config(-1, quiet_rep))
    quiet("node1 download: 1.0 MiB")
    assert quiet_rep.lines == [] and quiet.progress_line == "node1 download: 1.0 MiB", "-q: pytest's own output only"


def test_the_watch_speaks_only_after_a_quiet_period_and_says_what_it_knows():
    rep, now = Reporter(), [100.0]
    watch = ItemWatch(config(0, rep), every_s=11.0)
    watch.writer.clock = lambda: now[0]
    watch.writer.last_t = 100.0

    def tick(t: float) -> str | None:
        now[0] = t
        return watch.tick(t)

    assert tick(200.0) is None, "no item running: nothing to say"
    watch.current, watch.phase = ("placement", 3600.0, 200.0), "call"
    assert tick(210.9) is None
    assert tick(211.0) == "placement: waiting for its verdict (call); last seen no progress line yet; 11s of 3600s"
    assert tick(221.9) is None, "its own line counts as output: the next one comes a period later"
    now[0] = 222.0
    watch.writer("placement node1: waiting for its runner to be Ready; last seen RunnerLoading 1/2 layers")
    line = tick(233.0)
    assert line is not None and line.startswith('placement: waiting for its verdict (call); last seen "placement '
                                                'node1: waiting for its runner'), line
    assert line.endswith('" 11s ago; 33s of 3600s'), line
    watch.current = ("bench concurrency-c4", None, 300.0)
    assert tick(311.0) == ("bench concurrency-c4: waiting for the case to finish (call); last seen no progress "
                           "line yet; 11s")
    assert rep.lines[-1].endswith("last seen no progress line yet; 11s"), "each line went to the terminal"

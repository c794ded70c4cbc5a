#!/usr/bin/env python3
"""The preflight gate at N = 1..4 nodes, live and with every node on a CPU of its own: what our own fan-out costs.

    .venv/bin/python -m scripts.measure_preflight --env-file ENV [--nodes 1,2,3,4] [--repeat 3]

Contract: against a sandbox (or any cluster) of at least max(N) nodes that runs no exo, for each N it runs the
preflight gate's own call (`preflight_gate.run_preflight`, over the first N nodes of ENV) three ways and prints
the median wall seconds of each, and the ratio N=max / N=1 of each:
- live: as a run does, every node at once; on the sandbox the N nodes share this machine's CPU;
- solo: the same checks with one node command at a time machine-wide, each command's wall time recorded (the
  node-side work of each command alone, as on a node with its CPU to itself);
- replay: the same calls again, every node command answered with its recorded result after its recorded solo
  time, without using any CPU. This is preflight on N nodes that each bring their own CPU, as N Macs do: what
  is left to grow with N is ours (threads, parsing, the order of the checks).
Starts and stops nothing on the nodes; the preflight gate's run records go to a temp dir.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldrop.config import RunConfig, load_config
from modeldrop.download import expected_total
from modeldrop.errors import InputError
from modeldrop.hub import expectation_for
from modeldrop.nodepool import NodePool
from modeldrop.nodes import Node
from modeldrop.pernode import each
from modeldrop.preflight_gate import run_preflight
from scripts.nodecounts import node_counts

ONE_AT_A_TIME = threading.Lock()  # solo: one node command at a time on this machine


def command_key(cmd: Any) -> tuple[str, ...]:
    """What identifies a node command across runs: its display argv without the python chosen to run a probe."""
    shown = list(cmd.display)
    return tuple(shown[:2] + shown[3:]) if shown[:1] == ["<probe>"] else tuple(shown)


class TapeNode(Node):
    """A node that runs its commands through `inner` one at a time, recording (result, wall), or, given the tape,
    answers each with its recorded result after its recorded wall time (no node, no CPU)."""

    def __init__(self, inner: Node, tape: dict[tuple[str, ...], deque] | None = None):
        super().__init__(inner.name, inner.target, python_cmd=inner.python_cmd)
        self.inner, self.replaying = inner, tape is not None
        self.tape: dict[tuple[str, ...], deque] = tape if tape is not None else defaultdict(deque)
        self.solo_s = 0.0

    def __getattr__(self, name: str) -> Any:  # e.g. an SSH node's `resolved` target
        return getattr(self.__dict__["inner"], name)

    def _execute(self, cmd, *, timeout, stdin, on_line):
        key = command_key(cmd)
        if self.replaying:
            if not self.tape.get(key):
                raise SystemExit(f"measure_preflight: {self.name} ran {key!r}, which the solo run never ran")
            rc, out, err, wall = self.tape[key].popleft()
            time.sleep(wall)
            return rc, out, err
        with ONE_AT_A_TIME:
            t0 = time.monotonic()
            rc, out, err = self.inner._execute(cmd, timeout=timeout, stdin=stdin, on_line=on_line)
            wall = time.monotonic() - t0
        self.tape[key].append((rc, out, err, wall))
        self.solo_s += wall
        return rc, out, err

    def address(self) -> str:
        return self.inner.address()

    def close(self) -> None:
        if not self.replaying:
            self.inner.close()


def preflight_once(nodes: dict[int, Node], cfg: RunConfig, total: int | None) -> float:
    """Wall seconds of one preflight gate call; exits when it is not green (a measure of a failing gate misleads)."""
    def on_each(fn: Callable[[int], Any], ks: list[int] | None = None) -> dict[int, Any]:
        return each(ks or sorted(nodes), fn)
    t0 = time.monotonic()
    run = run_preflight(nodes, cfg, total, None, "pytest gates/", on_each)
    wall = time.monotonic() - t0
    if not run.verdict.ok:
        raise SystemExit(f"measure_preflight: preflight is not green at {len(nodes)} node(s): {run.verdict.summary}")
    return wall


def measure_n(env_file: Path, aliases: list[str], n: int, repeat: int) -> dict[str, float]:
    """{live, solo, replay, node_s} medians for the first n nodes (node_s: one node's solo command seconds)."""
    reports = tempfile.mkdtemp(prefix="measure-preflight-")
    cfg = load_config({"NODES": ",".join(aliases[:n]), "RUN_REPORT_DIR": reports}, env_file=env_file)
    total = expected_total(cfg, expectation_for(cfg))
    live, solo, replay, node_s = [], [], [], []
    for _ in range(repeat):
        pool = NodePool(cfg)
        try:
            live.append(preflight_once(pool.all(), cfg, total))
            taped = {k: TapeNode(node) for k, node in pool.all().items()}
            solo.append(preflight_once(taped, cfg, total))
        finally:
            pool.close()
        node_s.append(max(t.solo_s for t in taped.values()))
        replay.append(preflight_once({k: TapeNode(t.inner, t.tape) for k, t in taped.items()}, cfg, total))
    return {"live": statistics.median(live), "solo": statistics.median(solo),
            "replay": statistics.median(replay), "node_s": statistics.median(node_s)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env-file", type=Path, required=True, help="the cluster's env file (a sandbox's model_drop.env)")
    ap.add_argument("--nodes", default="1,2,3,4", help="comma-separated node counts, each 1-4")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    ns = node_counts(ap, a.nodes)
    try:
        aliases = [n.target for n in load_config({}, env_file=a.env_file).nodes]
    except InputError as e:
        ap.error(str(e))
    if len(aliases) < ns[-1]:
        ap.error(f"--nodes {a.nodes!r}: {a.env_file} lists {len(aliases)} node(s)")
    rows = {n: measure_n(a.env_file, aliases, n, a.repeat) for n in ns}
    print(f"{'N':>2} {'live s':>8} {'solo s':>8} {'one node s':>11} {'replay s':>9}")
    for n, r in rows.items():
        print(f"{n:>2} {r['live']:>8.2f} {r['solo']:>8.2f} {r['node_s']:>11.2f} {r['replay']:>9.2f}")
    lo, hi = rows[ns[0]], rows[ns[-1]]
    for what in ("live", "replay"):
        print(f"{what}: N={ns[-1]} / N={ns[0]} = {hi[what]:.2f} s / {lo[what]:.2f} s = {hi[what] / lo[what]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

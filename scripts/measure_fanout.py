#!/usr/bin/env python3
"""The chat gate's requests at N = 1..4 nodes against APIs that answer concurrently: what our own fan-out costs.

    .venv/bin/python -m scripts.measure_fanout [--nodes 1,2,3,4] [--ttft-ms 300] [--gap-ms 20] [--repeat 3]

Contract: starts one calibration server per node (sandbox/calibration_server.py: EXO-shaped chat completions on
a known schedule, every request answered at once, as EXO HEAD's batch generator does on a Mac), runs the chat
gate's two request phases (`run_chats`: streamed and not through every API; `latency_check`: the short requests
through each API) against the first N of them, and prints the median wall time of each per N and the ratio
N=max / N=1. The servers are stopped by their handles at the end. On the sandbox's real EXO or the emulator the
ratio is set by the shared CPU that generates every answer (see the closing note); here only our client work
scales with N.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from modeldrop.exo.observe import latency_check, run_chats
from sandbox.calibration_server import CalibServer
from scripts.nodecounts import node_counts

MODEL = "calib/model"


def timed(fn, *args, **kwargs) -> float:
    """Wall seconds of one call of fn(*args, **kwargs) (its verdict must be ok)."""
    t0 = time.perf_counter()
    v = fn(*args, **kwargs)
    wall = time.perf_counter() - t0
    if not v.ok:
        raise SystemExit(f"measure_fanout: a request failed: {'; '.join(v.problems)[:300]}")
    return wall


def measure(servers: list[CalibServer], ns: list[int], repeat: int) -> list[tuple[int, float, float]]:
    """(N, median run_chats seconds, median latency_check seconds) per N."""
    rows = []
    for n in ns:
        urls = {k: servers[k - 1].url for k in range(1, n + 1)}
        chats = [timed(run_chats, urls, MODEL, timeout_s=60) for _ in range(repeat)]
        lat = [timed(latency_check, urls, MODEL, 100.0, False, timeout_s=60) for _ in range(repeat)]
        rows.append((n, statistics.median(chats), statistics.median(lat)))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="1,2,3,4", help="comma-separated node counts, each 1-4")
    ap.add_argument("--ttft-ms", type=float, default=300.0)
    ap.add_argument("--gap-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    ns = node_counts(ap, a.nodes)
    servers: list[CalibServer] = []
    try:
        for _ in range(ns[-1]):
            servers.append(CalibServer.start(MODEL, defaults={"ttft_ms": a.ttft_ms, "gap_ms": a.gap_ms}))
        rows = measure(servers, ns, a.repeat)
    finally:
        for s in servers:
            s.stop()
    print(f"chat gate requests, APIs answering at once (ttft {a.ttft_ms:g} ms, {a.gap_ms:g} ms a token), "
          f"median of {a.repeat}")
    print(f"{'N':>3} {'requests':>9} {'run_chats (s)':>14} {'latency_check (s)':>18} {'both (s)':>9}")
    for n, c, lat in rows:
        print(f"{n:>3} {2 * n + 3 * n:>9} {c:>14.2f} {lat:>18.2f} {c + lat:>9.2f}")
    (n0, c0, l0), (n1, c1, l1) = rows[0], rows[-1]
    print(f"chat: N={n1} / N={n0} = {c1 + l1:.2f} s / {c0 + l0:.2f} s = {(c1 + l1) / (c0 + l0):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

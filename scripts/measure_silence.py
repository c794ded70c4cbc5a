"""Run a command and print how long its output stayed silent: the longest gaps between two output lines.

    .venv/bin/python scripts/measure_silence.py [--top 5] [--log FILE] -- pytest gates/ benchmarks/ --sandbox

The command runs with PYTHONUNBUFFERED=1, its stdout and stderr merged; each line is stamped with the moment
it arrived (a line is text ended by a newline: pytest's progress dots on one line are not lines). Prints the
command's exit status, its wall time, the longest silences (seconds, the line before and the line after), and
with --log every line with its arrival time. A figure printer, not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def run(argv: list[str]) -> tuple[int, float, list[tuple[float, str]]]:
    """(exit status, wall seconds, [(seconds since start, line)])."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    lines: list[tuple[float, str]] = [(0.0, "<start>")]
    pending = b""
    assert proc.stdout is not None
    while True:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        now = time.monotonic() - t0
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            lines.append((now, line.decode("utf-8", "replace")))
    rc = proc.wait()
    wall = time.monotonic() - t0
    if pending:
        lines.append((wall, pending.decode("utf-8", "replace")))
    lines.append((wall, "<end>"))
    return rc, wall, lines


def gaps(lines: list[tuple[float, str]], top: int) -> list[tuple[float, str, str]]:
    """The `top` longest (gap, line before, line after)."""
    out = [(b[0] - a[0], a[1], b[1]) for a, b in zip(lines, lines[1:], strict=False)]
    return sorted(out, key=lambda g: g[0], reverse=True)[:top]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=5, help="how many of the longest silences to print")
    ap.add_argument("--log", help="write every line with its arrival time here")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = ap.parse_args()
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        ap.error("give the command after --")
    rc, wall, lines = run(argv)
    if args.log:
        with open(args.log, "w", encoding="utf-8") as f:
            f.writelines(f"{t:8.1f}  {text}\n" for t, text in lines)
    print(f"exit status {rc}; wall {wall:.1f} s; {len(lines) - 2} lines")
    for gap, before, after in gaps(lines, args.top):
        print(f"silence {gap:6.1f} s  after: {before[:110]!r}\n{'':17}before: {after[:110]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The fault matrix: run every `@pytest.mark.fault` self-test and print one row per injected fault.

Columns: fault, the gate that caught it (expected gate in brackets when another one did), signature
seen, seconds from fault to verdict (and the window bounding it), downstream gates run, processes left
on the nodes, decoys harmed, results lost; then caught/total and the slowest fault-to-verdict. The
"must be 0" columns are asserted by the tests themselves; this prints what they measured.

Usage: .venv/bin/python scripts/fault_matrix.py [-n 2] [--results FILE] [pytest args…]
       .venv/bin/python scripts/fault_matrix.py --print-only [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from modeldrop.gatetable import gate_order

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_RESULTS = ROOT / "reports" / "fault_matrix.jsonl"
COLUMNS = ("fault", "caught by", "signature", "s to verdict", "window", "downstream", "procs left",
           "decoys hurt", "lost", "")


def load_measures(path: Path) -> dict[str, float]:
    """The measurement records of a results file ({"measure": name, "value": v}), last one winning."""
    out: dict[str, float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        rec = json.loads(line)
        if "measure" in rec:
            out[rec["measure"]] = rec["value"]
    return out


def load_rows(path: Path) -> list[dict]:
    """The rows of a results file, last row per test winning (a rerun replaces its row)."""
    rows: dict[str, dict] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        row = json.loads(line)
        if "fault" in row:
            rows[row["test"]] = row
    order = {g: i for i, g in enumerate(gate_order(4))}
    return sorted(rows.values(), key=lambda r: (order.get(r["expected_gate"], len(order)), r["expected_gate"],
                                                r["fault"]))


def _cell(v: object) -> str:
    return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


def table_lines(rows: list[dict]) -> list[str]:
    """The table as text lines, with the caught/total and slowest fault-to-verdict summary."""
    body = []
    for r in rows:
        by = r["caught_by"] or f"({r['expected_gate']})"
        if r["caught_by"] and r["caught_by"] != r["expected_gate"]:
            by += f" [want {r['expected_gate']}]"
        sig = r.get("signature_matched") or r["signature"] + ("" if r["signature_seen"] is not False else " (NOT SEEN)")
        body.append((r["fault"], by, sig[:28], _cell(r["verdict_s"]), _cell(r["window"]), _cell(r["downstream_run"]),
                     _cell(r["procs_left"]), _cell(r["decoys_harmed"]), _cell(r["results_lost"]),
                     "ok" if r["caught"] else r["outcome"].upper()))
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(COLUMNS)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*COLUMNS), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body]
    timed = [r for r in rows if r["verdict_s"] is not None]
    caught = sum(1 for r in rows if r["caught"])
    out.append(f"\ncaught {caught}/{len(rows)}")
    if timed:
        slow = max(timed, key=lambda r: r["verdict_s"])
        out.append(f"slowest fault-to-verdict: {slow['fault']} {slow['verdict_s']:.1f}s "
                   f"(window {slow['window'] or 'none set'}, caught by {slow['caught_by'] or slow['expected_gate']})")
    for col in ("procs_left", "decoys_harmed", "results_lost", "downstream_run"):
        total = sum(r[col] or 0 for r in rows)
        out.append(f"{col}: {total} in total")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="the rows file (JSON lines)")
    ap.add_argument("--print-only", action="store_true", help="print the table of an existing results file")
    ap.add_argument("-n", default="2", help="pytest-xdist workers (default 2)")
    args, pytest_args = ap.parse_known_args(argv)
    rc = 0
    if not args.print_only:
        env = {**os.environ, "MODELDROP_FAULT_RESULTS": str(args.results.resolve())}
        cmd = [sys.executable, "-m", "pytest", "tests_selftest", "-m", "fault", "-n", args.n, "-q", *pytest_args]
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    rows = load_rows(args.results)
    if not rows:
        print(f"fault_matrix: no rows in {args.results}", file=sys.stderr)
        return rc or 1
    print("\n".join(table_lines(rows)))
    for name, value in sorted(load_measures(args.results).items()):
        print(f"{name}: {value}")
    return rc


if __name__ == "__main__":
    sys.exit(main())

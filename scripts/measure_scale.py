"""Figures of the suite at 1-4 nodes: `python -m scripts.measure_scale [--nodes 1,2,3,4] [--exo real|emulator]
[--topology mesh|ring] [--plot PATH] [--from-runs DIR ...]`.

Contract: for each N it runs `pytest gates/ benchmarks/test_token_sweep.py --sandbox --sandbox-nodes N --teardown`
(one token-sweep case: 128 prompt tokens, 64 output tokens, 3 repeats) in the slot's sandbox
(MODELDROP_SANDBOX_SLOT), or reads the run folders given with --from-runs, and prints, from each run's own
ledger and benchmark JSON (nothing hard-coded):
- one table: every gate's wall time per N (nodeK_* gates summed per kind), the run's wall time;
- `POST /instance` to every runner Ready per N (the placement gate's `ready_after_post_s` note);
- chat tok/s through the ring per N (the token-sweep case's decode tok/s p50 through node 1's API, and EXO's own
  generation_tps), and with --plot a PNG of that curve;
- the ratios the suite promises to keep near 1: preflight and chat at the largest N over N = 1.
A run that fails is reported with its first failing gate and the script exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WINDOWS = ["--cluster-window", "60", "--settle-window", "3", "--ready-timeout", "300"]
SWEEP = ["--bench-profile", "short", "--bench-prompt-lens", "128", "--bench-output-lens", "64", "--bench-repeat", "3"]
SWEEP_CASE = "token_sweep-pp128-tg64"


def run_n(n: int, exo: str, topology: str, reports: Path) -> tuple[Path, float, int]:
    """One whole run at n nodes; (its run folder, wall seconds, exit status)."""
    cmd = [sys.executable, "-m", "pytest", "gates/", "benchmarks/test_token_sweep.py", "--sandbox", "--sandbox-nodes",
           str(n), "--sandbox-exo", exo, "--teardown", "--report-dir", str(reports), "-q", "-p", "no:cacheprovider",
           *WINDOWS, *SWEEP]
    if n > 1:
        cmd += ["--sandbox-topology", topology]
    t0 = time.monotonic()
    print(f"measure: {n} node(s): {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    return (reports / "latest").resolve(), time.monotonic() - t0, proc.returncode


def read_run(folder: Path) -> dict[str, Any]:
    """Gate durations, notes and the sweep case's figures of one run folder."""
    events = [json.loads(x) for x in (folder / "ledger.jsonl").read_text().splitlines() if x.strip()]
    gates: dict[str, float] = {}
    failed = None
    for e in events:
        if e.get("event") in ("pass", "fail") and e.get("gate"):
            per_node = re.fullmatch(r"node([2-9])_(download|verify)", e["gate"])
            kind = f"nodeK_{per_node.group(2)}" if per_node else e["gate"]
            gates[kind] = gates.get(kind, 0.0) + float(e.get("duration_s") or 0.0)
            if e["event"] == "fail" and failed is None:
                failed = e["gate"]
    notes = {(e.get("gate"), e.get("key")): e.get("value") for e in events if e.get("event") == "note"}
    nodes = max([int(g[4]) for g in (e.get("gate") or "" for e in events) if g[:4] == "node" and g[4:5].isdigit()]
                or [1])
    sweep = folder / "bench" / f"{SWEEP_CASE}.json"
    summary = json.loads(sweep.read_text())["summary"] if sweep.exists() else {}
    return {"folder": folder, "n": nodes, "gates": gates, "failed": failed,
            "ready_s": notes.get(("placement", "ready_after_post_s")), "ranks": notes.get(("placement", "ranks")),
            "decode_tps": (summary.get("decode_tps") or {}).get("p50"),
            "server_tps": (summary.get("server_generation_tps") or {}).get("p50")}


def fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    order = ["preflight", "node1_download", "node1_verify", "node1_canary", "nodeK_download", "nodeK_verify",
             "parity", "startup", "cluster", "placement", "transport", "chat"]
    head = f"{'gate (s)':<16}" + "".join(f"{'N=' + str(r['n']):>10}" for r in rows)
    print(head)
    for g in order:
        print(f"{g:<16}" + "".join(f"{fmt(r['gates'].get(g)):>10}" for r in rows))
    print(f"{'run wall':<16}" + "".join(f"{fmt(r.get('wall_s')):>10}" for r in rows))
    print(f"{'POST->Ready':<16}" + "".join(f"{fmt(r['ready_s']):>10}" for r in rows))
    print(f"{'decode tok/s':<16}" + "".join(f"{fmt(r['decode_tps']):>10}" for r in rows))
    print(f"{'EXO gen tok/s':<16}" + "".join(f"{fmt(r['server_tps']):>10}" for r in rows))
    for r in rows:
        print(f"N={r['n']}: ranks {r['ranks']}; run folder {r['folder']}")
    one = next((r for r in rows if r["n"] == 1), None)
    big = max(rows, key=lambda r: r["n"])
    if one is not None and big is not one:
        for g in ("preflight", "chat"):
            a, b = one["gates"].get(g), big["gates"].get(g)
            if a and b:
                print(f"{g}: N={big['n']} / N=1 = {b:.1f} s / {a:.1f} s = {b / a:.2f}")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = [(r["n"], r["decode_tps"], r["server_tps"]) for r in rows if r["decode_tps"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="decode tok/s p50 (client, node 1's API)")
    ax.plot([p[0] for p in pts], [p[2] for p in pts], "s--", label="EXO generation_tps p50")
    ax.set_xlabel("nodes in the ring")
    ax.set_ylabel("tokens / s (log scale)")
    ax.set_yscale("log")
    ax.set_xticks([p[0] for p in pts])
    ax.set_title(f"chat through the ring on this CPU ({SWEEP_CASE})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.measure_scale")
    ap.add_argument("--nodes", default="1,2,3,4", help="node counts to run, e.g. 1,4")
    ap.add_argument("--exo", choices=("real", "emulator"), default="real")
    ap.add_argument("--topology", choices=("mesh", "ring"), default="mesh")
    ap.add_argument("--plot", type=Path, help="write the tok/s curve here (PNG)")
    ap.add_argument("--from-runs", nargs="*", type=Path, default=None, help="read these run folders instead")
    a = ap.parse_args(argv)
    rows = []
    if a.from_runs:
        rows = [read_run(f) for f in a.from_runs]
    else:
        base = Path(tempfile.mkdtemp(prefix="measure-scale-", dir=os.environ.get("TMPDIR", "/var/tmp")))
        for n in (int(x) for x in a.nodes.split(",")):
            folder, wall, rc = run_n(n, a.exo, a.topology, base / f"n{n}")
            row = read_run(folder) | {"wall_s": wall, "rc": rc}
            rows.append(row)
            print(f"measure: {n} node(s): rc {rc}, {wall:.0f} s, {folder}", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: r["n"])
    print_table(rows)
    if a.plot:
        plot(rows, a.plot)
    bad = [r for r in rows if r["failed"] or r.get("rc")]
    for r in bad:
        print(f"N={r['n']}: FAILED at {r['failed']} (rc {r.get('rc')}); see {r['folder']}/handoff.md")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

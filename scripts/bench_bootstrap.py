#!/usr/bin/env python3
"""Bootstrap wall time against the downloads it needs, on the sandbox, serial vs --parallel-downloads.

Brings the sandbox up (slot MODELDROP_SANDBOX_SLOT or --slot) with the tiny model padded to --pad-mb MB
(still loadable), then for each download order (serial = the guide's, parallel) and each link shape
(independent = every node on its own line of --rate-mb MB/s, the hub's `node_link_bps`; shared = one line
of --rate-mb MB/s for all, `slow_link_bps`) wipes the nodes' files and runs the whole bootstrap
(`pytest gates/ --env-file <sandbox env> --teardown`). From each run's ledger.jsonl it prints every node's
download time, the bootstrap wall time (first gate start to last gate end) and wall time over the slowest
download; the hub's request log gives each node's measured rate. Results also land in --out (JSON, atomic).

Usage: .venv/bin/python scripts/bench_bootstrap.py [--pad-mb 200] [--rate-mb 20] [--nodes 2]
       [--orders serial,parallel] [--links independent,shared] [--slot S] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeldrop import atomic  # noqa: E402
from modeldrop.ledger.jsonl import read_jsonl  # noqa: E402

MB = 1_000_000
ORDERS = ("serial", "parallel")
LINKS = ("independent", "shared")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; bad values end with one line naming the option."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pad-mb", type=int, default=200, help="padding added to the tiny model (MB)")
    ap.add_argument("--rate-mb", type=float, default=20.0, help="link rate in MB/s (per node, or shared)")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--orders", default=",".join(ORDERS))
    ap.add_argument("--links", default=",".join(LINKS))
    ap.add_argument("--slot", type=int, default=int(os.environ.get("MODELDROP_SANDBOX_SLOT", "0")))
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: <sandbox>/bench-bootstrap.json)")
    a = ap.parse_args(argv)
    a.orders, a.links = a.orders.split(","), a.links.split(",")
    for name, got, valid in (("--orders", a.orders, ORDERS), ("--links", a.links, LINKS)):
        if not got or not set(got) <= set(valid):
            ap.error(f"{name}: {','.join(got)!r}; valid: a comma list of {', '.join(valid)}")
    if a.pad_mb < 0 or a.rate_mb <= 0 or not 1 <= a.nodes <= 4 or not 0 <= a.slot <= 239:
        ap.error("--pad-mb >= 0, --rate-mb > 0, --nodes 1..4 and --slot 0..239 are required")
    return a


def sandbox_up(slot: int, nodes: int, pad_mb: int) -> Any:
    """The sandbox of `slot`, up, with the padded model published."""
    from sandbox.cluster import Sandbox
    box = Sandbox(slot=slot, n_nodes=nodes, model_params={"pad_mb": pad_mb} if pad_mb else None)
    box.up()
    return box


def run_bootstrap(box: Any, order: str, link: str, rate_bps: int, report_dir: Path) -> dict[str, Any]:
    """Wipe the nodes, set the links, run `pytest gates/`; the run's figures."""
    for k in range(1, box.n_nodes + 1):
        box.reset_node_files(k)
    box.hub.set_faults(node_link_bps=rate_bps) if link == "independent" else box.hub.set_faults(slow_link_bps=rate_bps)
    n_req = len(box.hub.requests())
    argv = [sys.executable, "-m", "pytest", "gates/", "--env-file", str(box.env_file), "--report-dir",
            str(report_dir), "--teardown", "-q", "-p", "no:cacheprovider"]
    if order == "parallel":
        argv.append("--parallel-downloads")
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    elapsed = time.monotonic() - t0
    box.hub.clear_faults()
    folder = (report_dir / "latest").resolve()
    figures = ledger_figures(read_jsonl(folder / "ledger.jsonl"))
    return {"order": order, "link": link, "rc": proc.returncode, "process_s": round(elapsed, 1),
            "run_folder": str(folder), "hub_rate_mb_s": hub_rates(box.hub.requests()[n_req:]), **figures,
            "tail": proc.stdout[-600:] if proc.returncode else ""}


def ledger_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Downloads per node, bootstrap wall (first gate start to last gate end), wall / slowest download, and the
    download phase (first download start to the end of the last nodeK_download gate)."""
    downloads = {r["node"]: round(r["end"] - r["start"], 1) for r in records
                 if r.get("event") == "download_end" and r.get("end")}
    starts = [r["t"] for r in records if r.get("event") == "gate_start"]
    ends = [r["t"] for r in records if r.get("event") in ("pass", "fail", "skip") and r.get("gate")]
    wall = round(max(ends) - min(starts), 1) if starts and ends else None
    slowest = max(downloads.values(), default=None)
    failed = [r["gate"] for r in records if r.get("event") == "fail"]
    dl_starts = [r["start"] for r in records if r.get("event") == "download_start"]
    dl_gates = [r["t"] for r in records
                if r.get("event") in ("pass", "fail") and str(r.get("gate")).endswith("_download")]
    phase = round(max(dl_gates) - min(dl_starts), 1) if dl_starts and dl_gates else None
    return {"downloads_s": downloads, "wall_s": wall, "slowest_download_s": slowest, "failed": failed,
            "download_phase_s": phase,
            "wall_over_slowest": round(wall / slowest, 2) if wall and slowest else None}


def hub_rates(requests: list[dict[str, Any]]) -> dict[str, float]:
    """MB/s each client received over its GET bodies' span, as the hub logged them."""
    per: dict[str, list[tuple[float, float, int]]] = {}
    for r in requests:
        if r.get("method") == "GET" and r.get("body_s") is not None and r.get("bytes"):
            per.setdefault(r.get("node", r["client"]), []).append((r["t"] - r["body_s"], r["t"], r["bytes"]))
    out = {}
    for client, spans in per.items():
        span = max(e for _, e, _ in spans) - min(s for s, _, _ in spans)
        out[client.split("@")[0]] = round(sum(b for *_, b in spans) / MB / max(span, 1e-6), 1)
    return out


def table(rows: list[dict[str, Any]], nodes: int) -> str:
    """The printed table, one line per run."""
    head = f"{'order':<9}{'links':<13}" + "".join(f"{'node' + str(k) + ' dl s':>12}" for k in range(1, nodes + 1))
    head += f"{'dl phase s':>12}{'wall s':>9}{'wall/slowest':>14}{'hub MB/s per node':>30}  result"
    lines = [head]
    for r in rows:
        dls = "".join(f"{r['downloads_s'].get(f'node{k}', float('nan')):>12.1f}" for k in range(1, nodes + 1))
        rates = ", ".join(f"{c}={v}" for c, v in sorted(r["hub_rate_mb_s"].items()))
        result = "green" if r["rc"] == 0 else f"rc {r['rc']} failed {r['failed']}"
        lines.append(f"{r['order']:<9}{r['link']:<13}{dls}{r['download_phase_s'] or float('nan'):>12.1f}"
                     f"{r['wall_s'] or float('nan'):>9.1f}"
                     f"{r['wall_over_slowest'] or float('nan'):>14.2f}{rates:>30}  {result}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    box = sandbox_up(a.slot, a.nodes, a.pad_mb)
    size = box.model_info["storage_bytes"] if box.model_info else None
    print(f"sandbox slot {a.slot}: {a.nodes} nodes, model weights {size / MB:.0f} MB, link {a.rate_mb:g} MB/s",
          flush=True)
    out = a.out or box.root / "bench-bootstrap.json"
    rows: list[dict[str, Any]] = []
    for link in a.links:
        for order in a.orders:
            row = run_bootstrap(box, order, link, int(a.rate_mb * MB), box.root / "bench-reports")
            rows.append(row)
            atomic.write_bytes(out, json.dumps({"pad_mb": a.pad_mb, "rate_mb_s": a.rate_mb, "weights_bytes": size,
                                                "runs": rows}, indent=1).encode())
            print(table(rows[-1:], a.nodes).splitlines()[-1], flush=True)
    print("\n" + table(rows, a.nodes))
    print(f"\nresults: {out}")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

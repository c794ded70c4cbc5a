"""Print what issue 22's checks add to a green run: `python -m scripts.measure_guide_checks --env-file ENV
[--report-dir DIR] [--repeat 3]`.

Contract: against the cluster a green `pytest gates/` run (without --teardown) left serving, with that run's
env file and report dir, times each check the way the gates call it and prints one line per check (median of
`--repeat`, each measured here and now): the `facts` probe that now also looks for exo installs (preflight and
the launchers already ran it; the look-up is its extra stat calls), the `exos` scan of each node (preflight),
the SSH logins between nodes (preflight), the latency-stability requests (chat), and each node's logs kept in a
run folder (the canary's and the cluster's at the end of a run). Stops nothing; the kept logs go to a temp dir.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldrop.config import load_config
from modeldrop.exo import foreign
from modeldrop.exo.cluster import ExoCluster
from modeldrop.exo.launcher import api_addresses
from modeldrop.exo.observe import latency_check
from modeldrop.ledger.runfolder import RunFolder
from modeldrop.nodepool import NodePool
from modeldrop.preflight import ssh_login_warnings


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """(median seconds, last result) of `repeat` calls."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.monotonic()
        out = fn()
        times.append(time.monotonic() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env-file", type=Path, required=True)
    ap.add_argument("--report-dir", type=Path, default=None, help="the green run's report dir (default: the env "
                    "file's RUN_REPORT_DIR)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    cli = {"RUN_REPORT_DIR": str(a.report_dir)} if a.report_dir else {}
    cfg = load_config(cli, env_file=a.env_file)
    pool = NodePool(cfg)
    nodes = pool.all()
    try:
        for _name, node in nodes.items():
            node.facts()  # connect first: the SSH handshake is not a check
        s, _ = timed(lambda: [n.facts(refresh=True) for n in nodes.values()], a.repeat)
        print(f"facts probe (with the exo install look-up), all {len(nodes)} nodes: {s:.2f}s")
        s, rows = timed(lambda: [foreign.scan(n, [cfg.node(k).exo_cmd], api_addresses(n), cfg.api_port)
                                 for k, n in nodes.items()], a.repeat)
        print(f"exos scan (foreign exo), all nodes: {s:.2f}s ({sum(len(r) for r in rows)} exo process(es) seen: "
              "the cluster the green run left, which preflight leaves to the launcher)")
        s, (warned, _) = timed(lambda: ssh_login_warnings(nodes, cfg), a.repeat)
        print(f"SSH logins between nodes ({len(nodes) * (len(nodes) - 1)}): {s:.2f}s ({len(warned)} warned)")
        with tempfile.TemporaryDirectory() as tmp:
            cluster = ExoCluster(cfg, pool, RunFolder.create(Path(tmp), cfg.model_folder))
            cluster.reattach()
            s, v = timed(lambda: latency_check(cluster.urls(), cfg.model_id, cfg.chat_spread_max,
                                               cfg.chat_spread_stop), a.repeat)
            print(f"latency stability (3 short requests x {len(nodes)} nodes): {s:.2f}s ({v.summary})")
            s, kept = timed(lambda: cluster.keep_logs("cluster"), a.repeat)
            print(f"cluster logs kept in the run folder: {s:.2f}s ({len(kept)} file(s); the canary's: about "
                  f"{s / len(nodes):.2f}s more)")
    finally:
        pool.close()


if __name__ == "__main__":
    main()

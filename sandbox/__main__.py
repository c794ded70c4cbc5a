"""`python -m sandbox up|down|status|env`: build, stop, inspect the local sandbox cluster.

  up [--nodes N] [--slot S] [--root DIR] [--generation new|old] [--hub-port P] [--mode auto|ssh|local]
     [--report-dir DIR] [--exo auto|real|emulator] [--topology mesh|ring]   build or refresh; prints the
     env file path (ring: each node reaches only its two neighbours, as four Macs on Thunderbolt)
  down [--slot S] [--root DIR] [--purge]   stop what the sandbox started (--purge: also delete
     the node users and the root folder)
  status [--slot S] [--root DIR]           JSON: hub, nodes, env file
  env [--slot S] [--root DIR]              print the env file path
Exit status: 0 ok, 1 the sandbox failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sandbox", description="the modeldrop local sandbox cluster")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "env"):
        p = sub.add_parser(name)
        p.add_argument("--slot", type=int, default=0, help="0..239; addresses 127.0.<10+slot>.x (default 0)")
        p.add_argument("--root", type=Path, help="default /var/tmp/modeldrop-sandbox/slot<S>")
        if name == "up":
            p.add_argument("--nodes", type=int, default=2, help="1..4 (default 2)")
            p.add_argument("--generation", choices=("new", "old"), default="new")
            p.add_argument("--hub-port", type=int, default=8900)
            p.add_argument("--mode", choices=("auto", "ssh", "local"), default="auto")
            p.add_argument("--report-dir", type=Path)
            p.add_argument("--exo", choices=("auto", "real", "emulator"), default="auto",
                           help="the nodes' EXO: real EXO where it can be built (auto), or the emulator")
            p.add_argument("--topology", choices=("mesh", "ring"), default="mesh",
                           help="mesh: every node reaches every other; ring: only its two neighbours")
        if name == "down":
            p.add_argument("--purge", action="store_true", help="also delete node users and the root folder")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point (also the `modeldrop-sandbox` script)."""
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="sandbox: %(message)s", stream=sys.stderr)
    from sandbox.cluster import Sandbox, SandboxError, default_root

    root = a.root or default_root(a.slot)
    try:
        if a.cmd == "up":
            t0 = time.monotonic()
            sb = Sandbox(root, a.slot, a.nodes, generation=a.generation, hub_port=a.hub_port, mode=a.mode,
                         report_dir=a.report_dir, exo=a.exo, topology=a.topology)
            env = sb.up()
            print(f"sandbox up in {time.monotonic() - t0:.1f}s", file=sys.stderr)
            print(env)
            return 0
        if a.cmd == "env":
            env = root / "model_drop.env"
            if not env.exists():
                raise SandboxError(f"no env file at {env}; run `python -m sandbox up --slot {a.slot}`")
            print(env)
            return 0
        sb = Sandbox.from_root(root)
        if a.cmd == "status":
            print(json.dumps(sb.status(), indent=2))
            return 0
        stopped = sb.destroy() if a.purge else sb.down()
        for line in stopped:
            print(f"stopped {line}")
        print(f"sandbox slot {sb.slot} down ({len(stopped)} process(es) stopped)", file=sys.stderr)
        return 0
    except SandboxError as e:
        print(f"sandbox: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

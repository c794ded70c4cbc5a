#!/usr/bin/env python3
"""Median per-command latency: `SSHNode.run(["true"])` on one reused connection vs a fresh `ssh -F cfg host true`.

Also the first (connecting) SSHNode command and the `facts` probe round trip. Needs an sshd: the sandbox's
(`--ssh-config <root>/ssh_config --host sbx1-node1`) or, with `--own-sshd`, a private one started here
(tests_selftest/sshd_fixture.py) and stopped by pid at the end.

Usage: .venv/bin/python scripts/measure_ssh.py --ssh-config FILE --host ALIAS [-n 30]
       .venv/bin/python scripts/measure_ssh.py --own-sshd [-n 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modeldrop.ssh import SSHNode


def median_ms(samples: list[float]) -> str:
    """'12.3 ms (p90 15.0, n=30)'."""
    qs = statistics.quantiles(samples, n=10) if len(samples) > 1 else samples * 9
    return f"{statistics.median(samples) * 1000:7.1f} ms (p90 {qs[-1] * 1000:6.1f}, n={len(samples)})"


def timed(fn, n: int) -> list[float]:
    """Wall times of n calls of fn."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(ssh_config: Path, host: str, n: int) -> None:
    """Print the latencies for one host."""
    node = SSHNode("node1", host, ssh_config=ssh_config)
    t0 = time.perf_counter()
    node.run(["true"], timeout=30)
    first = time.perf_counter() - t0
    reused = timed(lambda: node.run(["true"], timeout=30), n)
    probe = timed(lambda: node.run_probe("facts", {}, timeout=30), max(5, n // 3))
    fresh = timed(lambda: subprocess.run(["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", host, "true"],
                                         check=True, stdin=subprocess.DEVNULL), n)
    node.close()
    print(f"host {host} (ssh_config {ssh_config})")
    print(f"  SSHNode first command (connect + auth): {first * 1000:7.1f} ms")
    print(f"  SSHNode.run(['true']) reused:           {median_ms(reused)}")
    print(f"  SSHNode.run_probe('facts'):             {median_ms(probe)}")
    print(f"  fresh `ssh -F cfg host true`:           {median_ms(fresh)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssh-config", type=Path)
    ap.add_argument("--host")
    ap.add_argument("--own-sshd", action="store_true", help="start a private sshd instead of using the sandbox's")
    ap.add_argument("-n", type=int, default=30)
    a = ap.parse_args(argv)
    if a.own_sshd:
        from tests_selftest.support.sshd_fixture import start_sshd
        with tempfile.TemporaryDirectory(prefix="measure-ssh-") as tmp:
            sshd = start_sshd(Path(tmp))
            try:
                measure(sshd.ssh_config, sshd.alias, a.n)
            finally:
                sshd.stop()
        return 0
    if not (a.ssh_config and a.host):
        ap.error("give --ssh-config and --host, or --own-sshd")
    measure(a.ssh_config, a.host, a.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())

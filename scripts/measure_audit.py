#!/usr/bin/env python3
"""Measure the per-node audit time (manifest probe + completeness verdict) and the sha256 throughput.

Two model dirs: the sandbox's tiny model (generated with sandbox.model, or --tiny-dir) and a generated dir
of --shards safetensors shards totalling --total-gb GB (real bytes, valid headers, index, config). For each
it prints the median wall time of the `manifest` probe and of `audit.completeness` over --repeat runs.
With --verify-hashes it also runs the `hashes` probe over the big dir's shards and `sha256sum` over the same
files (page cache warmed first) and prints MB/s for each.

Usage: .venv/bin/python -m scripts.measure_audit [--verify-hashes] [--target local|user@host:port|alias
       --ssh-config FILE] [--python /usr/bin/python3] [--workdir /var/tmp/modeldrop-measure]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from modeldrop.audit import completeness
from modeldrop.hub import expected_from_cache
from modeldrop.nodepool import make_node
from modeldrop.nodes import Node
from tests_selftest.support.modelfiles import make_model

MB = 1_000_000


def tiny_model(workdir: Path, given: str | None) -> Path:
    """The sandbox's tiny model dir (generated once)."""
    if given:
        return Path(given)
    out = workdir / "tiny" / "modeldrop--tiny-llama-sbx"
    if not (out / "config.json").exists():
        from sandbox.model import generate_model
        generate_model(out)
        for p in out.rglob("*"):  # readable by a sandbox node's user too
            p.chmod(0o755 if p.is_dir() else 0o644)
    return out


def big_model(workdir: Path, shards: int, total_gb: float) -> Path:
    """`shards` safetensors shards of total_gb GB (regenerated only when the size changed)."""
    out = workdir / "big" / "org--big-model"
    per = int(total_gb * 1e9 / shards) // 4 * 4
    marker = out / f".generated-{shards}x{per}"
    if not marker.exists():
        import shutil
        shutil.rmtree(out, ignore_errors=True)
        make_model(out, n_shards=shards, shard_bytes=per, hf_cache=True)
        marker.write_text("")
    return out


def time_audit(node: Node, path: Path, repeat: int) -> tuple[float, float, dict]:
    """Median seconds of the manifest probe and of the verdict, and the last verdict's facts."""
    probe_s, verdict_s = [], []
    verdict = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        m = node.run_probe("manifest", {"path": str(path), "model_folder": path.name, "search_alternates": True},
                           timeout=600)
        t1 = time.perf_counter()
        verdict = completeness(m, expected_from_cache(m))
        t2 = time.perf_counter()
        probe_s.append(t1 - t0)
        verdict_s.append(t2 - t1)
    return statistics.median(probe_s), statistics.median(verdict_s), {"ok": verdict.ok, **verdict.facts}


def hash_rates(node: Node, path: Path, workers: list[int]) -> None:
    """hashes probe MB/s per worker count vs sha256sum over the same files."""
    files = sorted(p.name for p in path.glob("*.safetensors"))
    subprocess.run(["cat", *files], cwd=path, stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    total = sum((path / f).stat().st_size for f in files)
    for w in workers:
        r = node.run_probe("hashes", {"path": str(path), "files": files, "workers": w}, timeout=3600)
        print(f"hashes probe  workers={w}: {r['bytes'] / MB:8.1f} MB in {r['seconds']:6.2f} s = "
              f"{r['bytes'] / MB / r['seconds']:7.1f} MB/s")
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", *files], cwd=path, stdout=subprocess.DEVNULL, check=True)
    dt = time.perf_counter() - t0
    print(f"sha256sum (1 process): {total / MB:8.1f} MB in {dt:6.2f} s = {total / MB / dt:7.1f} MB/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="local")
    ap.add_argument("--ssh-config", type=Path)
    ap.add_argument("--python", default="/usr/bin/python3", help="the node's python for probes")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/modeldrop-measure"))
    ap.add_argument("--tiny-dir", help="an existing tiny model dir instead of generating one")
    ap.add_argument("--shards", type=int, default=40)
    ap.add_argument("--total-gb", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--verify-hashes", action="store_true")
    ap.add_argument("--workers", default="1,4", help="comma-separated worker counts for the hashes probe")
    a = ap.parse_args(argv)
    opts = {"python_cmd": a.python}
    if a.target != "local":
        opts["ssh_config"] = a.ssh_config
    node = make_node("node1", a.target, **opts)
    a.workdir.mkdir(parents=True, exist_ok=True)
    dirs = {"tiny sandbox model": tiny_model(a.workdir, a.tiny_dir),
            f"{a.shards} shards / {a.total_gb:g} GB": big_model(a.workdir, a.shards, a.total_gb)}
    print(f"node {a.target}, python {a.python}, median of {a.repeat}")
    for label, path in dirs.items():
        probe_s, verdict_s, facts = time_audit(node, path, a.repeat)
        print(f"{label:24s} {facts['n_files']:3d} files {facts['total_bytes'] / MB:9.1f} MB: manifest probe "
              f"{probe_s * 1000:7.1f} ms, verdict {verdict_s * 1000:6.2f} ms, ok={facts['ok']}")
    if a.verify_hashes:
        hash_rates(node, dirs[f"{a.shards} shards / {a.total_gb:g} GB"], [int(w) for w in a.workers.split(",")])
    node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

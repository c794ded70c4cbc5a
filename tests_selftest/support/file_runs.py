"""Whole runs of the file gates (0-3) against the shared sandbox: the run options, node paths from the env
file, files written as a node's user, and the check that a fault was caught at its gate and nothing later ran."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from modeldrop.gatetable import gate_order
from tests_selftest.support.runs import later_gates_not_run, run_suite

FAST = ["--cluster-window", "15", "--settle-window", "2", "--ready-timeout", "120", "--teardown",
        "--download-backoff", "1"]
ORDER = gate_order(2)
# For a run whose test checks the file gates only: the gates after parity (EXO on every node) deselected; the
# canary stays (node 2's download waits for it). runs/test_cluster.py runs those gates green.
FILE_GATES_ONLY = ("-k", " and ".join(f"not {g}" for g in ORDER[ORDER.index("parity") + 1:]))


def env_values(sbx) -> dict[str, str]:
    """The sandbox's env file as a dict."""
    out = {}
    for line in Path(sbx.env_file).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip().removeprefix("export ").strip()] = v.strip().strip("'\"")
    return out


def node_dir(sbx, k: int, key: str = "MODEL_DIR_NODE") -> Path:
    """A node path from the env file, with ~ expanded to that node's home."""
    value = env_values(sbx)[f"{key}{k}"]
    return Path(value.replace("~", str(sbx.node_home(k)), 1)) if value.startswith("~") else Path(value)


def give(sbx, k: int, path: Path) -> None:
    """Hand a file or dir created by the test to node k's user (as a real download would be)."""
    pw = pwd.getpwnam(sbx.node_user(k))
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def write_as(sbx, k: int, path: Path, data: bytes, keep_mtime_of: Path | None = None) -> None:
    """Write a file on node k, optionally restoring the mtime so hf's fast path keeps it."""
    st = keep_mtime_of.stat() if keep_mtime_of else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if st:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    give(sbx, k, path)


def run(sbx, reports: Path, *args: str, **kw):
    """One whole run of the gates against this sandbox (kw: run_suite's extra_env, timeout)."""
    return run_suite(["gates/"], Path(sbx.env_file), reports, *FAST, *args, **kw)


def assert_caught(result, gate: str, *needles: str) -> None:
    """The gate failed with each needle in its message, and nothing after it ran."""
    assert result.outcome(gate) == "failed", (gate, result.outcomes, result.output[-3000:])
    for needle in needles:
        assert needle in result.message(gate), (needle, result.message(gate))
    assert later_gates_not_run(result, gate, ORDER) == []
    assert result.rc == 1

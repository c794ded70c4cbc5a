"""RunFacts: what the run learned about the nodes that decides whether a cached pass still holds.

The pass-cache fingerprint of a gate needs the hub commit, each node's exo build and, for the file
gates, each node's manifest digest. Gates set these as they measure them (`set_*`); when a gate
was deselected (`-k`, `--resume-bootstrap`) the facts are probed on demand and cached.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from modeldrop import audit, httpdeadline
from modeldrop.config import RunConfig
from modeldrop.errors import NodeError
from modeldrop.exo.installs import exo_cmd_of
from modeldrop.exo.launcher import node_identity, previous_records, probe_build
from modeldrop.nodepool import NodePool
from modeldrop.nodes import url_host
from modeldrop.probes._proc import START_TOLERANCE_S

EXO_NODE_ID_TIMEOUT_S = 5.0  # connect, headers and body of one /node_id look-up


class RunFacts:
    """Lazily probed, thread-safe facts of one run (hub commit, exo builds, manifest digests)."""

    def __init__(self, cfg: RunConfig, pool: NodePool):
        self.cfg = cfg
        self.pool = pool
        self._lock = threading.RLock()
        self._hub_commit: str | None = None
        self._exo: dict[int, Any] = {}
        self._manifests: dict[int, dict] = {}
        self._hf: dict[int, dict] = {}

    # -- setters used by gates as they measure -------------------------------------------------
    def set_manifest(self, k: int, manifest: dict) -> None:
        """Remember node k's manifest (from a verify gate or a probe)."""
        with self._lock:
            self._manifests[k] = manifest

    def set_hub_commit(self, commit: str | None) -> None:
        """Remember the hub commit the files were checked against."""
        with self._lock:
            self._hub_commit = commit or self._hub_commit

    def record_preflight(self, hf: dict[int, dict], builds: dict[int, Any]) -> None:
        """What preflight saw that later gates fingerprint: each node's `hf version` answer (when it has one) and
        exo build."""
        for k, result in hf.items():
            if result:
                self.set_hf_probe(k, result)
        for k, build in builds.items():
            self.set_exo_build(k, build)

    def set_exo_build(self, k: int, build: Any) -> None:
        """Remember node k's exo build (an `ExoBuild`)."""
        with self._lock:
            self._exo[k] = build

    # -- lazy getters -----------------------------------------------------------------------------
    def manifest(self, k: int) -> dict:
        """Node k's manifest, probed once if no gate measured it this run."""
        return self._cached(self._manifests, k, lambda: self.pool.get(k).run_probe(
            "manifest", {"path": self.cfg.node(k).model_dir, "model_folder": self.cfg.model_folder,
                         "search_alternates": False}, timeout=600))

    def manifest_digest(self, k: int) -> str | None:
        """Digest of node k's (path, size) manifest; None when the model dir does not exist."""
        m = self.manifest(k)
        return audit.manifest_digest(m) if m.get("exists") else None

    def hub_commit(self) -> str | None:
        """The commit of node 1's download metadata (offline truth), unless a gate set it."""
        with self._lock:
            if self._hub_commit:
                return self._hub_commit
        live, _ = audit.live_metadata(self.manifest(1))
        commits = {v.get("commit") for v in live.values() if v.get("commit")}
        commit = commits.pop() if len(commits) == 1 else None
        self.set_hub_commit(commit)
        return commit

    def exo_build(self, k: int) -> Any:
        """Node k's exo build, probed once with `exo --help`."""

        def probe() -> Any:
            node = self.pool.get(k)
            return probe_build(node, exo_cmd_of(node, self.cfg.node(k), self.cfg.sources))
        return self._cached(self._exo, k, probe)

    def exo_version(self, k: int) -> str | None:
        """A stable string for node k's exo build: generation, version and help digest."""
        b = self.exo_build(k)
        if b is None:
            return None
        return f"{b.generation}:{b.version or '?'}:{b.help_sha[:12]}"

    def set_hf_probe(self, k: int, result: dict) -> None:
        """Remember what node k's `hf version` answered (the preflight gate's `tool` probe)."""
        with self._lock:
            self._hf[k] = result

    def tool_versions(self, k: int) -> str:
        """What node k's hf and python answer (`hf version`, the probes' interpreter), probed once per run
        unless preflight measured them; a node that cannot say gets a one-off value that never matches."""
        nc = self.cfg.node(k)
        try:
            hf = self._cached(self._hf, k, lambda: self.pool.get(k).run_probe(
                "tool", {"path": nc.hf_cmd, "args": ["version"], "timeout": 60, "env": {}}, timeout=90))
            py = self.pool.get(k).facts()
        except NodeError as exc:
            return f"unknown:{uuid.uuid4().hex} ({exc})"
        head = (hf.get("stdout_head") or hf.get("stderr_head") or "").strip().splitlines()[:1]
        return (f"hf {head[0] if head else '?'} (rc {hf.get('rc')}); "
                f"python {py.get('python')} {py.get('python_version')}")

    def exo_session(self, k: int) -> str:
        """Which exo serves node k now: the node id its API answers plus the process identity (pid, start
        time, argv digest) from the launch record of the cluster process still running; a one-off
        `unreachable:…` / `no-live-launch-record:…` otherwise.

        Not cached: a cluster gate's pass holds only while the same exo processes serve, so a restart,
        a reboot or a dead API since the pass makes its fingerprint differ (an unreachable API never
        matches anything, not even another unreachable one), even if exo's node id were persistent.
        """
        try:
            url = f"http://{url_host(self.pool.get(k).address())}:{self.cfg.api_port}/node_id"
            r = httpdeadline.request("GET", url, total_s=EXO_NODE_ID_TIMEOUT_S)
            if r.status_code == 200 and isinstance(r.json(), str):
                return f"{r.json()}|{self.exo_process(k)}"
        except (NodeError, requests.RequestException, ValueError):
            pass
        return f"unreachable:{uuid.uuid4().hex}"

    def exo_process(self, k: int, max_records: int = 8) -> str:
        """`pid P start S argv D` of the newest cluster launch record for node k whose process still runs
        (start time checked), else `no-live-launch-record:<random>`."""

        seen: set[tuple] = set()
        node = self.pool.get(k)
        for rec in previous_records(Path(self.cfg.report_dir), None, k, node_identity(node, self.cfg.node(k).target)):
            if rec.role != "cluster" or rec.stopped or (rec.pid, rec.start) in seen or len(seen) >= max_records:
                continue
            seen.add((rec.pid, rec.start))
            rows = node.run_probe("procs", {"pids": [rec.pid], "exe_paths": None}, timeout=60)["procs"]
            if any(rec.start is not None and row.get("start") is not None
                   and abs(float(row["start"]) - float(rec.start)) <= START_TOLERANCE_S for row in rows):
                argv = hashlib.sha256(json.dumps(rec.argv).encode()).hexdigest()[:12]
                return f"pid {rec.pid} start {rec.start:.2f} argv {argv}"
        return f"no-live-launch-record:{uuid.uuid4().hex}"

    def _cached(self, store: dict, k: int, make: Callable[[], Any]) -> Any:
        """Return store[k], computing it once with `make`."""
        with self._lock:
            if k in store:
                return store[k]
        value = make()
        with self._lock:
            store.setdefault(k, value)
            return store[k]

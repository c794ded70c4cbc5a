"""Shared bodies of the per-node file gates (download, verify), so node 1 and nodes 2..N read alike.

Each step asks the library for a verdict, attaches the evidence, and fails with a message that
names the node and the evidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from modeldrop import hub
from modeldrop.config import RunConfig
from modeldrop.download import HF_DOWNLOAD_TIMEOUT_S, DownloadResult, run_hf_download
from modeldrop.facts import RunFacts
from modeldrop.nodepool import NodePool
from modeldrop.verify import verify_node


def hub_env(cfg: RunConfig) -> tuple[dict[str, str], list[str]]:
    """Environment for hf on a node (endpoint, token) and the secrets to redact."""
    env = {k: v for k, v in (("HF_ENDPOINT", cfg.hf_endpoint), ("HF_TOKEN", cfg.hf_token)) if v}
    return env, [env["HF_TOKEN"]] if "HF_TOKEN" in env else []


def expected_total(cfg: RunConfig, hub_expectation: hub.HubExpectation) -> int | None:
    """Total bytes the download should reach: hub tree (online), else one bounded hub look-up per run (none when
    the online look-up already failed), else the profile."""
    if hub_expectation.manifest is not None:
        return hub_expectation.manifest.total_size
    total = None
    if hub_expectation.error is None:
        total = hub.total_size(cfg.model_id, cfg.hf_revision, tuple(cfg.include), cfg.hf_endpoint, cfg.hf_token,
                               cfg.allow_insecure_hub, hub.lookup_timeout(cfg.stall_window_s))
    return total if total is not None else (cfg.profile or {}).get("total_size_bytes")


def node_download(k: int, cfg: RunConfig, pool: NodePool, hub_expectation: hub.HubExpectation,
                  limit_s: float = HF_DOWNLOAD_TIMEOUT_S) -> Callable[[Callable[[str], None]], DownloadResult]:
    """Node k's own `hf download` from the hub into MODEL_DIR_NODEk, as a function of its heartbeat; hf ends
    after limit_s (see `download.hf_limit_for_gate`) or after the stall window without a new byte."""
    nc = cfg.node(k)
    env, secrets = hub_env(cfg)
    total = expected_total(cfg, hub_expectation)

    def run(heartbeat: Callable[[str], None]) -> DownloadResult:
        return run_hf_download(pool.get(k), hf_cmd=nc.hf_cmd, model_id=cfg.model_id, local_dir=nc.model_dir,
                               include=cfg.include, env=env, timeout=limit_s, expected_bytes=total,
                               heartbeat=heartbeat, revision=cfg.hf_revision, secrets=secrets,
                               allow_insecure_hub=cfg.allow_insecure_hub, stall_s=cfg.stall_window_s)
    return run


def download_step(k: int, cfg: RunConfig, pool: NodePool, evidence: Any, live: Callable[[str], None],
                  hub_expectation: hub.HubExpectation, parallel: Any = None,
                  limit_s: float = HF_DOWNLOAD_TIMEOUT_S) -> None:
    """`hf download` into MODEL_DIR_NODEk exits 0, with a progress line at least every 10 s.

    With `parallel` (the session's ParallelDownloads, --parallel-downloads) the download was started in
    the background with node 1's: this waits for node k's and reports it the same way."""
    nc = cfg.node(k)
    if parallel is not None:
        job = parallel.wait(k)
        lines, result, stopped = job.lines, job.result, job.stopped_because
    else:
        lines, stopped = [], None

        def heartbeat(line: str) -> None:
            lines.append(line)
            live(line)

        t0 = time.time()
        record_download_span(evidence, k, "start", t0)
        result = node_download(k, cfg, pool, hub_expectation, limit_s)(heartbeat)
        record_download_span(evidence, k, "end", t0, time.time(), result.rc)
    evidence.text(f"node{k} hf download", "\n".join(lines + ["--- stdout ---", result.stdout_tail,
                                                               "--- stderr ---", result.stderr_tail]))
    evidence.note(f"node{k}_download_s", round(result.duration_s, 1))
    if result.reported_path:
        evidence.note(f"node{k}_download_path", result.reported_path)
    if stopped:
        evidence.strongest(f"node{k} hf download stopped: {stopped}")
        pytest.fail(f"node{k}: hf download {cfg.model_id} into {nc.model_dir} stopped because {stopped}",
                    pytrace=False)
    if result.stalled:
        evidence.strongest(f"node{k} hf download stalled: {result.hub_reason}")
        pytest.fail(f"node{k}: hf download {cfg.model_id} into {nc.model_dir} stalled: {result.hub_reason}",
                    pytrace=False)
    if result.rc != 0:
        reason = result.hub_reason or (result.stderr_tail.strip().splitlines() or ["no output"])[-1]
        evidence.strongest(f"node{k} hf download rc {result.rc}: {reason}")
        pytest.fail(f"node{k}: hf download {cfg.model_id} into {nc.model_dir} failed (rc {result.rc}): {reason}",
                    pytrace=False)


def record_download_span(evidence: Any, k: int, kind: str, start: float, end: float | None = None,
                         rc: int | None = None, stopped: str | None = None) -> None:
    """A `download_start` / `download_end` record in ledger.jsonl (the timeline draws each node's download)."""
    ledger = getattr(evidence, "ledger", None)
    if ledger is not None:
        ledger.download_span(f"node{k}", kind, start, end, rc, stopped=stopped)


def verify_step(k: int, cfg: RunConfig, pool: NodePool, facts: RunFacts, run_folder: Any, evidence: Any,
                hub_expectation: hub.HubExpectation) -> None:
    """MODEL_DIR_NODEk is complete: no markers, one format, index + shards, headers, counts, sizes."""
    if hub_expectation.error:
        pytest.fail(f"node{k}: cannot read the hub's tree for {cfg.model_id}: {hub_expectation.error}",
                    pytrace=False)
    fallback = facts.manifest(1) if k != 1 else None
    res = verify_node(pool.get(k), cfg.node(k), cfg, online=hub_expectation.manifest,
                      fallback_manifest=fallback)
    facts.set_manifest(k, res.manifest)
    if res.expected is not None:
        facts.set_hub_commit(res.expected.commit)
    run_folder.write_json(f"manifests/node{k}.json", res.manifest)
    evidence.json(f"node{k} verdict", {**res.verdict.as_dict(), "hashes": res.hashes,
                                       "expected_source": getattr(res.expected, "source", None)})
    for key, value in res.counts.items():
        evidence.note(key, value)
    for w in res.verdict.warnings:
        evidence.note("warning", f"node{k}: {w}")
    if not res.verdict.ok:
        evidence.strongest(f"node{k}: {res.verdict.problems[0]}")
        pytest.fail(f"node{k} ({cfg.node(k).model_dir}): {res.verdict.summary}", pytrace=False)

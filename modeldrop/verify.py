"""Verify (phases 1A/2A): a node's model dir is complete, checked against what the hub says.

`verify_node` takes one manifest probe (plus an optional parallel sha256 probe) and returns the
audit verdict together with the evidence that produced it; while the probes run, `progress` gets how far they
are (files and bytes listed; bytes hashed, rate and ETA). The expected manifest is the hub's
tree when online, else the tree `hf download` kept under `.cache/huggingface` on that node (or
node 1's, when this node has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modeldrop import audit, hub
from modeldrop.config import NodeConfig, RunConfig
from modeldrop.nodes import Node
from modeldrop.progress import Progress, amount
from modeldrop.verdict import Verdict


@dataclass
class VerifyResult:
    """A node's verdict, its manifest, the expectation used, and the hash check when asked for."""

    verdict: Verdict
    manifest: dict[str, Any]
    expected: hub.ExpectedManifest | None
    hashes: dict[str, Any] | None = None
    counts: dict[str, Any] = field(default_factory=dict)


MANIFEST_TIMEOUT_S = 900.0
HASHES_TIMEOUT_S = 2 * 3600.0  # node-side limit of the --verify-hashes probe; the verify gate's limit is longer


def probe_manifest(node: Node, nc: NodeConfig, cfg: RunConfig, progress: Progress | None = None,
                   expected_bytes: int | None = None) -> dict[str, Any]:
    """The node's manifest of MODEL_DIR_NODEk, searching other known dirs for the model too."""
    prog = (progress or Progress.off()).restart()

    def seen(f: dict) -> None:
        listed = amount(float(f.get("bytes") or 0), expected_bytes, prog.elapsed_s)
        prog.seen(nc.name, f"the manifest of {nc.model_dir}", f"{f.get('files')} files, {listed}",
                  MANIFEST_TIMEOUT_S)

    return node.run_probe("manifest", {"path": nc.model_dir, "model_folder": cfg.model_folder,
                                       "search_alternates": True}, timeout=MANIFEST_TIMEOUT_S, progress=seen)


def expectation(manifest: dict[str, Any], online: hub.ExpectedManifest | None,
                fallback: dict[str, Any] | None) -> hub.ExpectedManifest | None:
    """Hub tree when online; else this node's cached tree; else the fallback manifest's tree."""
    if online is not None:
        return online
    for m in (manifest, fallback):
        expected = hub.expected_from_cache(m) if m else None
        if expected is not None:  # a tree that is there but unreadable or empty falls through to the next
            return expected
    return None


def verify_node(node: Node, nc: NodeConfig, cfg: RunConfig, *, online: hub.ExpectedManifest | None = None,
                fallback_manifest: dict[str, Any] | None = None, progress: Progress | None = None) -> VerifyResult:
    """Audit node `nc`'s model dir; with --verify-hashes also sha256 every large file on the node."""
    manifest = probe_manifest(node, nc, cfg, progress, online.total_size if online is not None else None)
    expected = expectation(manifest, online, fallback_manifest)
    want_st, want_gguf, new_commit = count_expectations(cfg, expected.commit if expected else None)
    verdict = audit.completeness(
        manifest, expected, include=cfg.include, exclude=cfg.exclude, expected_safetensors=want_st,
        expected_gguf=want_gguf, strict=not cfg.fast, label=f"MODEL_DIR_NODE{nc.index}")
    if new_commit:
        verdict.warnings.append(new_commit)
    result = VerifyResult(verdict, manifest, expected, counts=weight_counts(manifest))
    if cfg.verify_hashes and manifest.get("exists"):
        result.hashes = check_hashes(node, nc, manifest, expected, progress)
        if result.hashes["mismatches"]:
            verdict.problems.append(f"{len(result.hashes['mismatches'])} files fail the sha256 check: "
                                    + "; ".join(result.hashes["mismatches"][:5]))
            verdict.settle()
    return result


def count_expectations(cfg: RunConfig, commit: str | None) -> tuple[int | None, int | None, str | None]:
    """(expected safetensors, expected gguf, a warning or None). Counts the operator set always apply; counts from
    the model's profile apply to the hub commit they were confirmed on: on a new commit they are not enforced (a
    repository re-uploaded in its first days is not a broken download) and the warning says so."""
    profile = cfg.profile or {}
    confirmed_on = profile.get("hub_commit")
    if not commit or not confirmed_on or commit == confirmed_on:
        return cfg.expected_safetensors, cfg.expected_gguf, None
    from_profile = {key: key not in cfg.sources for key in ("EXPECTED_SAFE_TENSOR_COUNT", "EXPECTED_GGUF_COUNT")}
    st = None if from_profile["EXPECTED_SAFE_TENSOR_COUNT"] else cfg.expected_safetensors
    gguf = None if from_profile["EXPECTED_GGUF_COUNT"] else cfg.expected_gguf
    held = [f"{v} {k}" for k, v, mine in (("safetensors", cfg.expected_safetensors, st),
                                          ("gguf", cfg.expected_gguf, gguf)) if v is not None and mine is None]
    counts = f"; its counts ({', '.join(held)}) are not enforced on it" if held else ""
    return st, gguf, (f"new hub commit {commit[:12]}: the profile of {cfg.model_id} was confirmed on "
                      f"{confirmed_on[:12]}{counts}; this run's counts are recorded as observed (two green runs on "
                      f"{commit[:12]} that agree, or --update-profile, make them the expectations)")


def weight_counts(manifest: dict[str, Any]) -> dict[str, Any]:
    """Counts, total size and layout (file count, shard pattern, required non-shard files) for the ledger and the
    model profile."""
    files = manifest.get("files", [])
    return {"safetensors_count": sum(f["path"].endswith(".safetensors") for f in files),
            "gguf_count": sum(f["path"].endswith(".gguf") for f in files),
            "total_size_bytes": sum(f["size"] for f in files), **audit.layout(manifest)}


def check_hashes(node: Node, nc: NodeConfig, manifest: dict[str, Any],
                 expected: hub.ExpectedManifest | None, progress: Progress | None = None) -> dict[str, Any]:
    """sha256 of every file the hub tree gives an LFS sha256 for (the large files), computed on the node in
    parallel, against that sha256."""
    if expected is None:
        return {"checked": 0, "mismatches": ["no expected sha256 (no hub tree and no cached tree)"]}
    targets = [f["path"] for f in manifest.get("files", [])
               if f["path"] in expected.files and expected.files[f["path"]].sha256]
    prog = progress or Progress.off()
    t0 = prog.elapsed_s

    def seen(f: dict) -> None:
        done = amount(float(f.get("bytes") or 0), float(f.get("total") or 0) or None, prog.elapsed_s - t0)
        prog.seen(nc.name, f"sha256 of {len(targets)} files", f"{f.get('files_done')}/{f.get('files')} files, {done}",
                  HASHES_TIMEOUT_S)

    got = node.run_probe("hashes", {"path": nc.model_dir, "files": targets, "workers": 4}, timeout=HASHES_TIMEOUT_S,
                         progress=seen)
    mismatches = [f"{p}: expected {expected.files[p].sha256[:12]}…, got {got['sha256'].get(p, 'missing')[:12]}…"
                  for p in targets if got["sha256"].get(p) != expected.files[p].sha256]
    mb_s = got["bytes"] / max(got["seconds"], 1e-9) / 1e6
    return {"checked": len(targets), "bytes": got["bytes"], "seconds": got["seconds"],
            "mb_per_s": round(mb_s, 1), "mismatches": mismatches}

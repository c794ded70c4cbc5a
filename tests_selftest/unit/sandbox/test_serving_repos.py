"""The sandbox hub's no-go repos (sandbox.serving_repos): what the hub lists and serves for each, and the serving
verdict each one earns from that listing (fabricated nodes; the whole runs are in tests_selftest/runs)."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from modeldrop import serving
from modeldrop.config import load_config
from modeldrop.serving import GB, NodeServing, RepoMeta
from modeldrop.verdict import Fact
from sandbox import serving_repos as sr
from sandbox.hub import start_hub, stop_hub
from sandbox.hub.repos import DECLARED, RepoStore, tree
from sandbox.model import generate_model


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serving-repos")
    generate_model(root / "model")
    assert sr.publish_serving_repos(root / "repos", root / "model", root / "work") == list(sr.REPOS)
    return root / "repos"


def meta_of(store: RepoStore, repo_id: str) -> RepoMeta:
    """The verdict's view of a repo, read the way the hub serves it (list, config.json, index)."""
    snap = store.snapshot(repo_id)
    files = {p: f.size for p, f in snap.files.items()}
    read = {p: json.loads(f.read(0, f.size)) for p, f in snap.files.items() if p.endswith(".json")}
    index = read.get("model.safetensors.index.json")
    return RepoMeta(f"the hub ({repo_id})", files, files, read.get("config.json"), None,
                    {"total_size": index["metadata"]["total_size"], "shards": sorted(set(index["weight_map"].values()))}
                    if index else None)


def nodes(avail_gb: float = 23) -> dict[int, NodeServing]:
    exo = {"model_types": ["llama", "qwen3"], "remapping": {}, "mlx_lm_version": "0.31.3", "builtin_card": None}
    mem = {"available_bytes": int(avail_gb * GB), "total_bytes": 25 * GB}
    return {k: NodeServing(k, mem, exo) for k in (1, 2)}


def cfg(tmp_path, model_id: str):
    return load_config({}, environ={"MODEL_ID": model_id, "NODES": "u@h1,u@h2", "RUN_REPORT_DIR": str(tmp_path),
                                    "PROFILE_PATH": str(tmp_path / "none.json")})


def test_the_huge_repo_is_listed_at_its_declared_size_and_holds_a_few_bytes(repos):
    snap = RepoStore(repos).snapshot(sr.DOES_NOT_FIT)
    shards = {p: f for p, f in snap.files.items() if p.endswith(".safetensors")}
    assert DECLARED not in snap.files and (repos / sr.DOES_NOT_FIT / DECLARED).exists()
    assert sum(f.size for f in shards.values()) == sr.DOES_NOT_FIT_BYTES + 2 * sr.SHARD_HEADER
    entry = next(e for e in tree(snap, "", True) if e["path"] == "model-00001-of-00002.safetensors")
    assert entry["size"] == entry["lfs"]["size"] == sr.DOES_NOT_FIT_BYTES // 2 + sr.SHARD_HEADER
    f = shards["model-00001-of-00002.safetensors"]
    assert 0 < len(f.read(0, 10_000)) < 100 and f.read(10_000, 20_000) == b""


@pytest.mark.parametrize("repo_id, fact, needle", [
    (sr.UNKNOWN_ARCH, Fact.unknown_architecture, f"no mlx_lm.models.{sr.ARCH_TYPE} in the exo of node1"),
    (sr.GGUF_ONLY, Fact.unloadable_format, "gguf only (1 gguf)"),
    (sr.DOES_NOT_FIT, Fact.does_not_fit, "does not fit: 713.0 GB (the index's metadata.total_size) on min_nodes=2"),
])
def test_each_repo_earns_its_no_go_and_only_that_one(repos, tmp_path, repo_id, fact, needle):
    v = serving.judge(meta_of(RepoStore(repos), repo_id), nodes(), cfg(tmp_path, repo_id))
    assert list(v.facts) == [fact], v.problems
    (p,) = v.problems
    assert needle in p


def test_the_tiny_models_twin_without_the_fault_would_serve(repos, tmp_path):
    """The unknown-arch repo is the tiny model but for model_type: with it restored the verdict is GO."""
    m = meta_of(RepoStore(repos), sr.UNKNOWN_ARCH)
    m.config["model_type"] = "llama"
    assert serving.judge(m, nodes(), cfg(tmp_path, sr.UNKNOWN_ARCH)).details["outcome"] == "GO"


def test_the_hub_ends_a_declared_body_short_instead_of_hanging(repos, tmp_path):
    host = f"127.0.9.{1 + os.getpid() % 250}"
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    h = start_hub(repos, host, port, tmp_path / "requests.jsonl", tmp_path / "hub.pid")
    try:
        url = f"{h.url}/{sr.DOES_NOT_FIT}/resolve/main/model-00001-of-00002.safetensors"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert int(r.headers["Content-Length"]) == sr.DOES_NOT_FIT_BYTES // 2 + sr.SHARD_HEADER
            got = b"".join(iter(lambda: r.read(65536), b""))  # the body ends after the bytes the hub holds
        assert 0 < len(got) < 100
    finally:
        stop_hub(tmp_path / "hub.pid", h.host, h.port)

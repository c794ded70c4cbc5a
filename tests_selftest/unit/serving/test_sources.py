"""Where the serving verdict reads the model from: the hub (its one listing, config.json, the index), a node's
cached hub tree and files when the hub cannot be read, the files on disk with --audit. A real sandbox hub."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldrop import serving as sv
from modeldrop.config import load_config
from modeldrop.serving import GB, NodeServing, RepoMeta
from sandbox.hub import publish, start_hub, stop_hub
from tests_selftest.support.sshd_fixture import free_port

GOOD, BAD_CONFIG, NO_CONFIG = "org/good-4bit", "org/bad-config", "org/no-config"


def repo(dest: Path, config: str | None, total: int = 3000) -> Path:
    dest.mkdir(parents=True)
    if config is not None:
        (dest / "config.json").write_text(config)
    (dest / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": {"a": "model-00001-of-00001.safetensors"}}))
    (dest / "model-00001-of-00001.safetensors").write_bytes(b"\0" * (total + 100))
    return dest


CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 4, "hidden_size": 64,
          "quantization": {"group_size": 64, "bits": 4}}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("serving-hub")
    for repo_id, config in ((GOOD, json.dumps(CONFIG)), (BAD_CONFIG, "{not json"), (NO_CONFIG, None)):
        publish(root / "repos", repo_id, repo(root / "src" / repo_id, config))
    host = f"127.0.97.{10 + os.getpid() % 200}"
    h = start_hub(root / "repos", host, free_port(host), root / "hub.log", root / "hub.pid")
    yield h.url
    stop_hub(root / "hub.pid", h.host, h.port)


def cfg(tmp_path, model: str, endpoint: str, **env):
    base = {"MODEL_ID": model, "NODES": "u@h1,u@h2", "RUN_REPORT_DIR": str(tmp_path), "HF_ENDPOINT": endpoint,
            "PROFILE_PATH": str(tmp_path / "none.json"), "STALL_WINDOW_S": "3"}
    return load_config({}, environ={**base, **{k: str(v) for k, v in env.items()}})


def nodes(local: dict | None = None) -> dict[int, NodeServing]:
    exo = {"model_types": ["llama"], "remapping": {}, "mlx_lm_version": "0.31.3", "builtin_card": None}
    mem = {"available_bytes": 20 * GB, "total_bytes": 24 * GB}
    return {k: NodeServing(k, mem, exo, (local or {}) if k == 1 else {}) for k in (1, 2)}


def test_the_hub_gives_the_list_the_config_and_the_index(hub, tmp_path):
    meta = sv.repo_meta_hub(cfg(tmp_path, GOOD, hub))
    assert isinstance(meta, RepoMeta) and meta.source.startswith(f"the hub ({GOOD}@")
    assert meta.config == CONFIG and meta.index == {"total_size": 3000, "shards": ["model-00001-of-00001.safetensors"]}
    assert meta.files["model-00001-of-00001.safetensors"] == 3100
    v = sv.serving_verdict(cfg(tmp_path, GOOD, hub), nodes())
    assert v.ok and v.details["outcome"] == "GO" and v.details["items"]["quantization"]["bits"] == 4


def test_a_config_the_hub_serves_that_is_not_json_is_one_line_and_unknown(hub, tmp_path):
    v = sv.serving_verdict(cfg(tmp_path, BAD_CONFIG, hub), nodes())
    assert v.ok and v.details["items"]["architecture"]["status"] == "unknown"
    line = v.details["items"]["architecture"]["line"]
    assert line.startswith(f"config.json from the hub ({BAD_CONFIG}@") and ": not JSON (JSONDecodeError: " in line
    assert v.details["items"]["memory"]["status"] == "go"
    none = sv.serving_verdict(cfg(tmp_path, NO_CONFIG, hub), nodes())
    assert none.details["items"]["architecture"]["line"].startswith("config.json: the repo has none")


def test_an_unreachable_hub_falls_back_to_a_nodes_cached_tree_and_files(tmp_path):
    host = "127.0.97.250"
    with socket.socket() as s:
        s.bind((host, 0))
        dead = f"http://{host}:{s.getsockname()[1]}"  # nothing listens once the socket closes
    local = {"tree": {"commit": "c0ffee", "files": {"config.json": {"size": 200}, "model.safetensors.index.json":
                                                    {"size": 90}, "model-00001-of-00001.safetensors": {"size": 3100}}},
             "config": CONFIG, "index": {"path": "model.safetensors.index.json", "total_size": 3000,
                                         "weight_files": ["model-00001-of-00001.safetensors"], "error": None}}
    v = sv.serving_verdict(cfg(tmp_path, "org/gone", dead), nodes(local))
    assert v.ok and v.details["source"] == "the hub tree cached on node1" and v.details["outcome"] == "GO"
    assert v.warnings[0].startswith("serving verdict from the hub tree cached on node1: the hub's file list cannot "
                                    "be read (NodeError: hub: cannot list org/gone@main")
    nothing = sv.serving_verdict(cfg(tmp_path, "org/gone", dead), nodes())
    assert nothing.ok and nothing.details["outcome"] == "UNKNOWN"
    assert "no node has a cached hub tree" in nothing.warnings[0]


def test_an_audit_reads_the_files_on_disk(tmp_path):
    local = {"files": {"config.json": 200, "model.safetensors.index.json": 90, "Model-Q4.gguf": 3100,
                       ".cache/huggingface/download/x.metadata": 10},
             "config": CONFIG, "index": None}
    v = sv.serving_verdict(cfg(tmp_path, GOOD, "http://127.0.0.1:9", AUDIT=1), nodes(local))
    assert v.details["source"] == "the files in MODEL_DIR_NODE1"
    assert [p.split(":")[0] for p in v.problems] == ["will not serve (format)"]
    assert sv.serving_verdict(cfg(tmp_path, GOOD, "http://127.0.0.1:9", AUDIT=1), nodes()).details["outcome"] \
        == "UNKNOWN"

"""EXO emulator, in-process units: config, paths, log format/rotation, state shapes, placement, chat shapes.

Expected key sets are written from /work/shared/reference/exo-contract.md (§1.4, §2.2-2.5), not
from the emulator's code.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sandbox.exo_emulator import chat as C
from sandbox.exo_emulator.cards import builtin_cards, card_json, load_custom_cards, model_list_entry
from sandbox.exo_emulator.config import config_from_dict
from sandbox.exo_emulator.ids import new_node_id, random_ephemeral_port
from sandbox.exo_emulator.logs import ExoLogger, zstd_raw_frame
from sandbox.exo_emulator.models import find_model
from sandbox.exo_emulator.paths import exo_paths, models_dirs
from sandbox.exo_emulator.placement import get_cycles, place, previews
from sandbox.exo_emulator.state import State

# contract §2.2, in order
CONTRACT_NEW_KEYS = ["instances", "runners", "downloads", "tasks", "lastSeen", "topology", "lastEventAppliedIdx",
                     "nodeIdentities", "nodeMemory", "nodeDisk", "nodeSystem", "nodeNetwork", "nodeThunderbolt",
                     "nodeThunderboltBridge", "nodeRdmaCtl", "nodeBackends", "thunderboltBridgeCycles",
                     "instanceLinks", "prefillServerPorts", "customModelCards"]
CONTRACT_OLD_MISSING = {"nodeBackends", "instanceLinks", "prefillServerPorts", "customModelCards"}


def test_state_keys_both_generations() -> None:
    s = State()
    assert list(s.to_json("new")) == CONTRACT_NEW_KEYS
    assert set(s.to_json("old")) == set(CONTRACT_NEW_KEYS) - CONTRACT_OLD_MISSING
    assert s.to_json("new")["topology"] == {"nodes": [], "connections": {}}


def test_node_joins_with_its_last_seen() -> None:
    """As EXO's apply_node_gathered_info: the event that adds a node to the topology stamps its lastSeen."""
    s = State()
    s.apply(0, {"type": "NodeInfo", "nodeId": "a1", "when": "2026-12-02T03:40:00.000001Z",
                "rdmaCtl": {"enabled": False}})
    st = s.to_json("new")
    assert st["topology"]["nodes"] == ["a1"] and st["lastSeen"] == {"a1": "2026-12-02T03:40:00.000001Z"}
    s.apply(1, {"type": "NodeTimedOut", "nodeId": "a1"})
    assert s.to_json("new")["lastSeen"] == {}


def test_node_ids_per_generation() -> None:
    new = {new_node_id("new") for _ in range(50)}
    assert len(new) == 50 and all(re.fullmatch(r"[0-9a-f]{1,32}", n) and not n.startswith("0") for n in new)
    old = new_node_id("old")
    assert re.fullmatch(r"12D3KooW[1-9A-HJ-NP-Za-km-z]{44}", old)
    assert all(49152 <= random_ephemeral_port() <= 65535 for _ in range(200))


def test_paths_layouts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("EXO_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "EXO_DEFAULT_MODELS_DIR",
                "EXO_MODELS_DIRS", "EXO_MODELS_READ_ONLY_DIRS"):
        monkeypatch.delenv(var, raising=False)
    mac = exo_paths("macos")
    assert mac.log_file == tmp_path / ".exo/exo_log/exo.log"
    assert mac.pid_file == tmp_path / ".exo/exo.pid"
    assert mac.first_run_marker == tmp_path / ".exo/.dashboard_opened"
    lin = exo_paths("linux")
    assert lin.log_file == tmp_path / ".cache/exo/exo_log/exo.log"
    assert lin.first_run_marker == tmp_path / ".config/exo/.dashboard_opened"
    assert lin.custom_cards_dir == tmp_path / ".local/share/exo/custom_model_cards"
    assert [d.path for d in models_dirs(lin)] == [tmp_path / ".local/share/exo/models"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xc"))
    assert exo_paths("linux").log_file == tmp_path / "xc/exo/exo_log/exo.log"
    monkeypatch.setenv("EXO_HOME", "custom")
    assert exo_paths("linux").cache_home == tmp_path / "custom"
    monkeypatch.delenv("EXO_HOME")
    monkeypatch.setenv("EXO_DEFAULT_MODELS_DIR", "~/m")
    monkeypatch.setenv("EXO_MODELS_DIRS", f"{tmp_path}/x:{tmp_path}/ro")
    monkeypatch.setenv("EXO_MODELS_READ_ONLY_DIRS", f"{tmp_path}/ro")
    dirs = models_dirs(lin)
    assert [(str(d.path), d.read_only) for d in dirs] == [
        (f"{tmp_path}/ro", True), (f"{tmp_path}/m", False), (f"{tmp_path}/x", False)]


def test_model_completeness(tmp_path: Path) -> None:
    from sandbox.exo_emulator.paths import ModelDir

    d = tmp_path / "models" / "org--name"
    d.mkdir(parents=True)
    dirs = [ModelDir(tmp_path / "models", False)]
    (d / "model-1.safetensors").write_bytes(b"x")
    assert find_model("org/name", dirs) is None  # no index
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}))
    assert find_model("org/name", dirs) is None  # a listed shard missing
    (d / "model-2.safetensors").write_bytes(b"")
    assert find_model("org/name", dirs).path == d
    assert find_model("org/other", dirs) is None


def test_log_format_and_zstd_rotation(tmp_path: Path) -> None:
    log = ExoLogger()
    path = tmp_path / "exo_log" / "exo.log"
    log.setup(path, -1)
    log.info("first run", "exo.main:main:1")
    log.close()
    line = path.read_text().splitlines()[0]
    assert re.fullmatch(r"\[ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| INFO     \| exo\.main:main:1 \] first run", line)
    log2 = ExoLogger()
    log2.setup(path, -1)
    log2.close()
    archives = list(path.parent.glob("exo.*.log.zst"))
    assert len(archives) == 1
    if shutil.which("zstdcat"):
        out = subprocess.run(["zstdcat", str(archives[0])], capture_output=True, check=True).stdout.decode()
        assert "first run" in out
    assert zstd_raw_frame(b"")[:4] == b"\x28\xb5\x2f\xfd"


def test_config_defaults_and_faults() -> None:
    cfg = config_from_dict({"generation": "old", "faults": {"runner_never_ready": True, "state_runner_lag": True}})
    assert cfg.version == "1.0.71" and not cfg.is_new
    assert cfg.faults.runner_never_ready == "loading" and cfg.faults.state_runner_lag == 30.0
    assert cfg.timing.ring_retry_s == (1.0, 2.0, 4.0, 8.0, 16.0)
    assert cfg.timing.node_timeout_s == 30.0 and cfg.timing.edge_probe_s == 10.0


def test_model_list_entry_keys() -> None:
    # contract §2.3
    keys = {"id", "object", "created", "owned_by", "hugging_face_id", "name", "description", "context_length", "tags",
            "storage_size_megabytes", "supports_tensor", "tasks", "is_custom", "family", "quantization", "base_model",
            "capabilities", "reasoning_dialect"}
    llama = next(c for c in builtin_cards() if c["model_id"] == "mlx-community/Llama-3.2-1B-Instruct-4bit")
    row = model_list_entry(llama)
    assert set(row) == keys
    assert row["storage_size_megabytes"] == 696 and row["owned_by"] == "exo" and row["object"] == "model"
    camel = card_json(llama, "new")
    assert camel["modelId"] == llama["model_id"] and camel["storageSize"] == {"inBytes": 729808896}
    assert camel["nLayers"] == 16 and "backends" in camel and "backends" not in card_json(llama, "old")


def test_custom_card_toml(tmp_path: Path) -> None:
    (tmp_path / "org--m.toml").write_text('model_id = "org/m"\nn_layers = 4\nhidden_size = 64\n'
                                          'supports_tensor = false\ntasks = ["TextGeneration"]\n'
                                          'backends = ["MlxCpu"]\n[storage_size]\nin_bytes = 1000\n')
    (tmp_path / "broken.toml").write_text("not = [toml")
    cards = load_custom_cards(tmp_path)
    assert [c["model_id"] for c in cards] == ["org/m"] and cards[0]["is_custom"] is True


def _state(nodes: dict[str, int], edges: list[tuple[str, str]], gen: str = "new") -> dict:
    s = State()
    for nid, avail in nodes.items():
        s.apply(0, {"type": "NodeInfo", "nodeId": nid, "memory": {"ramAvailable": {"inBytes": avail}},
                    "network": {"interfaces": [{"name": "en0", "ipAddress": f"10.0.0.{len(nid)}",
                                                "interfaceType": "ethernet"}]},
                    "backends": ["MlxCpu", "MlxMetal"], "rdmaCtl": {"enabled": False}})
    for a, b in edges:
        ip = f"10.0.0.{len(b)}"
        s.apply(1, {"type": "EdgeCreated", "source": a, "sink": b, "edge": {"sinkMultiaddr": {
            "address": f"/ip4/{ip}/tcp/52415", "address_type": "ip4", "ip_address": ip, "port": 52415}}})
    return s.to_json(gen)


LLAMA = next(c for c in builtin_cards() if c["model_id"] == "mlx-community/Llama-3.2-1B-Instruct-4bit")
QWEN = next(c for c in builtin_cards() if c["model_id"] == "mlx-community/Qwen3-0.6B-4bit")
GB = 1024 ** 3


def test_placement_rules() -> None:
    st = _state({"a": 8 * GB, "bb": 8 * GB}, [("a", "bb"), ("bb", "a")])
    assert sorted(map(len, get_cycles(st))) == [1, 1, 2]
    one = place(st, LLAMA, "Tensor", "MlxRing", 1, "new")  # 1-node: forced Pipeline/MlxRing
    old_one = place(_state({"a": 8 * GB}, [], "old"), LLAMA, "Tensor", "MlxJaccl", 1, "old")
    assert "MlxRingInstance" in old_one  # OLD: no rdma_ctl gate, a singleton is trivially RDMA
    body = one["MlxRingInstance"]
    assert len(body["shardAssignments"]["nodeToRunner"]) == 1
    shard = next(iter(body["shardAssignments"]["runnerToShard"].values()))
    assert "PipelineShardMetadata" in shard
    assert list(body["hostsByNode"].values())[0] == [{"ip": "0.0.0.0", "port": body["ephemeralPort"]}]
    two = place(st, LLAMA, "Pipeline", "MlxRing", 2, "new")["MlxRingInstance"]
    hosts = two["hostsByNode"]
    p = two["ephemeralPort"]
    # rank order as rustworkx 0.17 gives it: for nodes [a, bb] the cycle starts at bb, so bb is rank 0
    assert hosts["bb"][0] == {"ip": "0.0.0.0", "port": p} and hosts["bb"][1] == {"ip": "10.0.0.1", "port": p}
    assert hosts["a"][1] == {"ip": "0.0.0.0", "port": p} and hosts["a"][0] == {"ip": "10.0.0.2", "port": p}
    layers = sorted((s["PipelineShardMetadata"]["startLayer"], s["PipelineShardMetadata"]["endLayer"])
                    for s in two["shardAssignments"]["runnerToShard"].values())
    assert layers == [(0, 8), (8, 16)]
    with pytest.raises(ValueError, match="^No cycles found with sufficient memory$"):
        place(st, LLAMA, "Pipeline", "MlxRing", 3, "new")
    with pytest.raises(ValueError, match="^Requested Tensor sharding but this model does not support tensor "
                                         "parallelism: mlx-community/Qwen3-0.6B-4bit$"):
        place(st, QWEN, "Tensor", "MlxRing", 1, "new")
    for k in (1, 2):  # NEW gates on nodeRdmaCtl.enabled (false on the emulator's nodes)
        with pytest.raises(ValueError, match=r"^Requested RDMA \(MlxJaccl\) but no RDMA-connected cycles available$"):
            place(st, LLAMA, "Pipeline", "MlxJaccl", k, "new")
    low = _state({"a": GB // 4}, [])
    with pytest.raises(ValueError, match="No cycles found with sufficient memory"):
        place(low, LLAMA, "Pipeline", "MlxRing", 1, "new")
    no_edge = _state({"a": 8 * GB, "bb": 8 * GB}, [("a", "bb")])
    with pytest.raises(ValueError, match="No cycles found"):
        place(no_edge, LLAMA, "Pipeline", "MlxRing", 2, "new")


def test_previews_shape() -> None:
    st = _state({"a": 8 * GB, "bb": 8 * GB}, [("a", "bb"), ("bb", "a")])
    out = previews(st, LLAMA, "new", None)
    assert all(set(p) == {"model_id", "sharding", "instance_meta", "instance", "memory_delta_by_node", "error"}
               for p in out)
    assert any(p["error"] is None and p["sharding"] == "Pipeline" for p in out)
    assert any(p["instance_meta"] == "MlxJaccl" and p["error"] for p in out)


def test_chat_shapes() -> None:
    req = C.parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, bench=True)
    req.command_id = "cmd-1"
    chunk = C.delta_chunk(req, "Hel", True)
    assert chunk["object"] == "chat.completion"
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert "usage" not in chunk and "finish_reason" not in chunk["choices"][0]
    last = C.delta_chunk(req, "lo", True, "stop", C.usage(12, 5))
    assert last["choices"][0]["finish_reason"] == "stop" and last["usage"]["total_tokens"] == 17
    assert set(last["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
                                  "completion_tokens_details"}
    s = {"prompt_tps": 1, "generation_tps": 2, "prompt_tokens": 12, "generation_tokens": 5, "peak_memory": 123}
    assert C.stats(s, "in_bytes")["peak_memory_usage"] == {"in_bytes": 123}
    req.node_ids = ["n1", "n2"]
    body = C.full_body(req, "Hello", s, "length")
    assert body["generation_stats"]["peak_memory_usage"] == {"inBytes": 123} and body["usage"] is None
    assert [n["node_id"] for n in body["power_usage"]["nodes"]] == ["n1", "n2"] and body["service_tier"] is None
    assert set(body["generation_stats"]) == {"prompt_tps", "generation_tps", "prompt_tokens", "generation_tokens",
                                             "peak_memory_usage", "prefix_cache_hit"}
    with pytest.raises(C.RequestError):
        C.parse_chat({"messages": []}, bench=False)


def test_old_stream_chunks_send_nulls() -> None:
    # contract §2.5: since 2026-05-14 null fields are omitted; older versions (v1.0.71) sent them as null
    req = C.parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, bench=False)
    old = C.delta_chunk(req, "Hel", False)
    assert old["choices"][0]["delta"]["content"] == "Hel" and old["choices"][0]["finish_reason"] is None
    assert old["usage"] is None and old["object"] == "chat.completion"

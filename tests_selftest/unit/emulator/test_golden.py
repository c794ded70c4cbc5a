"""The emulator's bodies against the golden ones EXO's own code produced, key by key and tag by tag.

For the golden scenarios (both generations) the emulator builds its body in-process, with the same
builders its API serves from (placement, state events, chat chunks, cards, errors); `shape_diff`
compares them: the same keys, the same union tags, the same JSON types (null is a type: a body that
sends an object where EXO sends null differs). Values may differ. Id-keyed maps (node, runner,
instance ids) are compared value by value, whatever the ids.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox.exo_emulator import chat as C
from sandbox.exo_emulator.cards import builtin_cards, card_json, model_list_entry
from sandbox.exo_emulator.config import config_from_dict
from sandbox.exo_emulator.coordinator import DownloadCoordinator
from sandbox.exo_emulator.http_errors import enum_error, exo_error
from sandbox.exo_emulator.ids import new_node_id, new_uuid
from sandbox.exo_emulator.instances import snake_instance
from sandbox.exo_emulator.paths import exo_paths
from sandbox.exo_emulator.placement import place, previews
from sandbox.exo_emulator.state import State, unwrap
from sandbox.exo_emulator.worker import Worker
from tests_selftest.support import DATA

GOLDEN = DATA / "exo-golden"
GENS = {"head": "new", "v1.0.71": "old"}
MODEL = "mlx-community/Llama-3.2-1B-Instruct-4bit"
ID_KEY = re.compile(r"^([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|12D3KooW\w+)$")


# -- the comparison -------------------------------------------------------------------------------
def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(v), type(v).__name__)


def _id_map(d: dict) -> bool:
    return bool(d) and all(ID_KEY.match(str(k)) for k in d)


def _tag(v: Any) -> str | None:
    return next(iter(v)) if isinstance(v, dict) and len(v) == 1 and str(next(iter(v)))[:1].isupper() else None


def _sample(candidates: list[Any], emu: Any) -> Any:
    """The golden value to hold `emu` against: one with the same union tag (or the same 'sharding'/
    'instance_meta' and outcome, for previews) when EXO has one, else the first."""
    same = [g for g in candidates if _tag(g) is not None and _tag(g) == _tag(emu)]
    if isinstance(emu, dict) and "instance" in emu:
        same = [g for g in candidates
                if isinstance(g, dict) and (g.get("instance") is None) == (emu["instance"] is None)
                and g.get("sharding") == emu.get("sharding")] or same
    return (same or candidates)[0]


def shape_diff(golden: Any, emu: Any, path: str = "$") -> list[str]:
    """Where `emu` has another shape than `golden`: keys, union tags, JSON types (values may differ)."""
    if _kind(golden) != _kind(emu):
        return [f"{path}: EXO sends {_kind(golden)}, the emulator {_kind(emu)}"]
    if isinstance(golden, list):
        if len(golden) == len(emu):
            pairs = list(zip(golden, emu, strict=True))
        else:
            pairs = [(_sample(golden, e), e) for e in emu] if golden else []
        return [d for i, (g, e) in enumerate(pairs) for d in shape_diff(g, e, f"{path}[{i}]")]
    if not isinstance(golden, dict):
        return []
    if _id_map(golden) or (not golden and _id_map(emu)):
        if not golden or not emu:
            return []
        values = list(golden.values())
        return [d for k, v in emu.items() for d in shape_diff(_sample(values, v), v, f"{path}[{str(k)[:8]}]")]
    out = [f"{path}: EXO has key {k!r}, the emulator does not" for k in golden if k not in emu]
    out += [f"{path}: the emulator has key {k!r}, EXO does not" for k in emu if k not in golden]
    return out + [d for k in golden if k in emu for d in shape_diff(golden[k], emu[k], f"{path}.{k}")]


def golden(gen: str, name: str) -> Any:
    return json.loads((GOLDEN / gen / name).read_text())


def sse_data(gen: str, name: str) -> list[Any]:
    lines = (GOLDEN / gen / name).read_text().splitlines()
    return [json.loads(x[6:]) for x in lines if x.startswith("data: {")]


def sse_comment(gen: str, name: str, prefix: str) -> Any:
    lines = (GOLDEN / gen / name).read_text().splitlines()
    return json.loads(next(x for x in lines if x.startswith(f": {prefix} "))[len(prefix) + 3:])


def card() -> dict:
    return next(c for c in builtin_cards() if c["model_id"] == MODEL)


def nodes(gen: str) -> tuple[str, str]:
    a, b = golden(gen, "state_empty.json")["topology"]["nodes"]
    return a, b


# -- emulator builders (the same functions the emulator's API and worker use) ----------------------
def emu_worker(gen: str, nid: str, tmp_path: Path) -> Any:
    events: list = []
    cfg = config_from_dict({"generation": GENS[gen], "node_address": "192.168.1.10", "friendly_name": "studio-1"})
    fake = SimpleNamespace(cfg=cfg, node_id=nid, cluster=SimpleNamespace(publish=events.append),
                           node=SimpleNamespace(paths=exo_paths("macos")))
    return fake, events


def emu_state(gen: str, tmp_path: Path, monkeypatch: Any, runners: dict[int, dict] | None = None,
              with_instance: bool = True) -> dict:
    """/state as the emulator builds it from its own events for the golden 2-node scenario."""
    monkeypatch.setenv("HOME", str(tmp_path))
    gold = golden(gen, "state_empty.json")
    s = State()
    events: list = []
    for nid in nodes(gen):
        fake, evs = emu_worker(gen, nid, tmp_path)
        Worker.publish_info(fake)
        events += evs
    conns = gold["topology"]["connections"]
    events += [{"type": "EdgeCreated", "source": a, "sink": b, "edge": e[0]} for a, sinks in conns.items()
               for b, e in sinks.items()]
    events.append({"type": "LastSeen", "times": {n: "2026-06-22T14:58:20.279185Z" for n in nodes(gen)}})
    if with_instance:
        for i, e in enumerate(events):
            s.apply(i, e)
        inst = place(s.data, card(), "Pipeline", "MlxRing", 2, GENS[gen])
        events.append({"type": "InstanceCreated", "instance": inst})
        body = unwrap(inst)
        for rid, shard in body["shardAssignments"]["runnerToShard"].items():
            nid = next(n for n, r in body["shardAssignments"]["nodeToRunner"].items() if r == rid)
            rank = unwrap(shard)["deviceRank"]
            status = (runners or {}).get(rank, {"RunnerReady": {"prefillServerPort": None} if gen == "head" else {}})
            events.append({"type": "RunnerStatus", "runnerId": rid, "status": status})
            fake, _ = emu_worker(gen, nid, tmp_path)
            prog = DownloadCoordinator.progress(fake, "DownloadCompleted", card(), "/Users/me/.exo/models/x", shard,
                                                total={"inBytes": 1}, readOnly=False)
            events.append({"type": "Download", "nodeId": nid, "progress": prog})
            events.append({"type": "TaskCreated", "task": {"DownloadModel": {
                "taskId": new_uuid(), "taskStatus": "Complete", "instanceId": body["instanceId"],
                "shardMetadata": shard}}})
    s = State()
    for i, e in enumerate(events):
        s.apply(i, e)
    return s.to_json(GENS[gen])


def chat_req(bench: bool = False) -> C.ChatRequest:
    req = C.parse_chat({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, bench)
    req.command_id = new_uuid()
    return req


STATS = {"prompt_tps": 100.0, "generation_tps": 50.0, "prompt_tokens": 12, "generation_tokens": 3,
         "peak_memory": 123456789, "elapsed_s": 0.03}


# -- the scenarios --------------------------------------------------------------------------------
def emu_placement_ring(gen: str, **_: Any) -> Any:
    state = golden(gen, "state_empty.json")
    inst = place(state, card(), "Pipeline", "MlxRing", 2, GENS[gen])
    a, b = nodes(gen)
    ranks = {n: unwrap(s)["deviceRank"] for n, r in unwrap(inst)["shardAssignments"]["nodeToRunner"].items()
             for rid, s in unwrap(inst)["shardAssignments"]["runnerToShard"].items() if rid == r}
    assert ranks == {b: 0, a: 1}, "rank order: EXO (rustworkx 0.17) puts the second node at rank 0"
    return inst


def emu_jaccl(gen: str, **_: Any) -> Any:
    state = golden(gen, "state_rdma_topology.json")
    inst = place(state, card(), "Tensor", "MlxJaccl", 2, GENS[gen])
    gold = unwrap(golden(gen, "placement_jaccl_tensor_2node.json"))
    assert unwrap(inst)["jacclDevices"] == gold["jacclDevices"]
    assert {n: c.split(":")[0] for n, c in unwrap(inst)["jacclCoordinators"].items()} == \
        {n: c.split(":")[0] for n, c in gold["jacclCoordinators"].items()}
    return inst


def emu_previews(gen: str, **_: Any) -> Any:
    got = previews(golden(gen, "state_empty.json"), card(), GENS[gen], None)
    assert {(p["sharding"], p["instance_meta"]) for p in got} == \
        {(p["sharding"], p["instance_meta"]) for p in golden(gen, "previews.json")["previews"]}
    return {"previews": got}


def emu_state_ready(gen: str, tmp_path: Path, monkeypatch: Any) -> Any:
    return emu_state(gen, tmp_path, monkeypatch, {0: {"RunnerRunning": {}}})


def emu_state_failed(gen: str, tmp_path: Path, monkeypatch: Any) -> Any:
    failed: dict = {"errorMessage": "Terminated (exitcode=1)"}
    if gen == "head":
        failed["diagnostics"] = []
    s = emu_state(gen, tmp_path, monkeypatch, {1: {"RunnerFailed": failed}})
    for rid in [r for r, v in s["runners"].items() if "RunnerFailed" not in v]:
        del s["runners"][rid]  # the peer shut down
    return s


def emu_state_loading(gen: str, tmp_path: Path, monkeypatch: Any) -> Any:
    return emu_state(gen, tmp_path, monkeypatch, {1: {"RunnerLoading": {"layersLoaded": 3, "totalLayers": 8}},
                                                  0: {"RunnerWarmingUp": {}}})


def emu_await(gen: str, **_: Any) -> Any:
    inst = place(golden(gen, "state_empty.json"), card(), "Pipeline", "MlxRing", 2, GENS[gen])
    return {"type": "ready", "instance": {next(iter(inst)): snake_instance(inst)}}


def emu_chunks(gen: str, bench: bool = False) -> list[Any]:
    req, new = chat_req(bench), gen == "head"
    return [C.delta_chunk(req, "Hmm", new, key="reasoning_content"), C.delta_chunk(req, "Hel", new),
            C.delta_chunk(req, "lo", new, "stop", C.usage(12, 3))]


SCENARIOS: dict[str, Any] = {
    "node_id.json": lambda gen, **_: new_node_id(GENS[gen]),
    "placement_ring_pipeline_2node.json": emu_placement_ring,
    "placement_min_nodes_1.json": lambda gen, **_: place(golden(gen, "state_empty.json"), card(), "Pipeline",
                                                         "MlxRing", 1, GENS[gen]),
    "placement_bad_meta_422.json": lambda gen, **_: {"detail": [enum_error("instance_meta", "MlxRingInstance",
                                                                            ("MlxRing", "MlxJaccl"))]},
    "placement_error_400.json": lambda gen, **_: exo_error(400, "No cycles found with sufficient memory"),
    "previews.json": emu_previews,
    "placement_jaccl_tensor_2node.json": emu_jaccl,
    "create_instance_response.json": lambda gen, **_: {"message": "Command received.", "command_id": new_uuid(),
                                                       "model_card": card_json(card(), GENS[gen])},
    "state_empty.json": lambda gen, tmp_path, monkeypatch: emu_state(gen, tmp_path, monkeypatch, with_instance=False),
    "state_ready.json": emu_state_ready,
    "state_failed.json": emu_state_failed,
    "state_loading.json": emu_state_loading,
    "instance_get.json": emu_placement_ring,
    "instance_get_404.json": lambda gen, **_: exo_error(404, "Instance not found"),
    "instance_await_ready.sse": emu_await,
    "models.json": lambda gen, **_: {"object": "list", "data": [model_list_entry(card(), GENS[gen])]},
    "chat_stream.sse": lambda gen, **_: emu_chunks(gen),
    "chat_nonstream.json": lambda gen, **_: C.full_body(chat_req(), "Hello", STATS, "stop", "Hmm", gen == "head"),
    "chat_stream_error.sse": lambda gen, **_: [C.delta_chunk(chat_req(), "Hel", gen == "head"),
                                              C.error_chunk("Runner shutdown before completing command (exitcode=1)",
                                                            gen == "head")],
    "bench_nonstream.json": lambda gen, **_: C.full_body(
        SimpleNamespace(**{**vars(chat_req(True)), "node_ids": list(nodes(gen))}), "HmmHello", STATS, "stop", None,
        gen == "head"),
    "chat_no_instance_404.json": lambda gen, **_: exo_error(404, f"No instance found for model {MODEL}"),
}
NOT_COMPARED = {  # golden files with no emulator body of their own, and why
    "state_rdma_topology.json": "the emulator's nodes have no RDMA (its topology shape is state_empty's)",
    "state_failed_peer_ready.json": "same runner and instance shapes as state_failed/state_ready",
    "state_stale_failed_no_instance.json": "same runner shapes as state_failed",
    "state_node_to_runner_empty.json": "EXO never builds it (hand-posted instance); the emulator neither",
    "state_path_nodeToRunner.json": "a sub-path of state_ready",
    "models_downloaded.json": "same rows as models.json",
    "chat_stream_toolcall.sse": "the emulator makes no tool calls",
    "bench_stream.sse": "compared in test_bench_stream_shape",
    "instance_await_absent.txt": "checked in test_await_route_per_generation",
}


def _golden_body(gen: str, name: str) -> Any:
    if name.endswith(".sse"):
        data = sse_data(gen, name)
        return data[0] if name == "instance_await_ready.sse" else data
    return golden(gen, name)


CASES = [(g, n) for g in GENS for n in SCENARIOS if (GOLDEN / g / n).exists()]


def test_every_golden_file_is_compared_or_excused() -> None:
    for gen in GENS:
        names = {p.name for p in (GOLDEN / gen).iterdir() if p.name != "INDEX.tsv"}
        assert names <= set(SCENARIOS) | set(NOT_COMPARED), sorted(names - set(SCENARIOS) - set(NOT_COMPARED))


@pytest.mark.parametrize("gen,name", CASES, ids=[f"{g}/{n}" for g, n in CASES])
def test_emulator_body_has_exos_shape(gen: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emu = SCENARIOS[name](gen, tmp_path=tmp_path, monkeypatch=monkeypatch)
    diffs = shape_diff(_golden_body(gen, name), emu)
    assert not diffs, "\n".join(diffs)


@pytest.mark.parametrize("gen", list(GENS))
def test_bench_stream_shape(gen: str) -> None:
    """HEAD streams /bench like chat (no reasoning split); v1.0.71's /bench answers the JSON body."""
    if gen == "head":
        assert not shape_diff(sse_comment(gen, "bench_stream.sse", "generation_stats"), C.stats(STATS, "in_bytes"))
        req = chat_req(True)
        req.resolve_thinking(["text", "thinking"])
        assert not req.split_reasoning  # thinking text arrives as content on /bench
    else:
        body = golden(gen, "bench_stream.sse")
        emu = C.full_body(SimpleNamespace(**{**vars(chat_req(True)), "node_ids": list(nodes(gen))}), "x", STATS,
                          "stop", None, False)
        assert not shape_diff(body, emu)


def test_shape_diff_catches_what_matters() -> None:
    """The comparison itself: a dropped tag, a null turned object, a missing key all show."""
    assert shape_diff({"instance": {"MlxRingInstance": {"a": 1}}}, {"instance": {"a": 1}})
    assert shape_diff({"usage": None}, {"usage": {"prompt_tokens": 1}}) == \
        ["$.usage: EXO sends null, the emulator object"]
    assert shape_diff({"x": 1, "y": 2}, {"x": 5}) == ["$: EXO has key 'y', the emulator does not"]
    a, b = "3f2a9c1b7d4e5f60718293a4b5c6d7e8", "1c0f9e8d7c6b5a493827160f5e4d5678"
    assert not shape_diff({a: {"RunnerReady": {}}}, {b: {"RunnerReady": {}}})
    assert shape_diff({a: {"RunnerReady": {}}}, {b: {"RunnerReady": {"x": None}}})

"""Every golden EXO body (produced by EXO's own code, both generations) through modeldrop's views,
clients and verdicts, with the outcome a gate would reach on it.

The bodies are served by a local HTTP server with the status and content type EXO used, so the
real `ExoClient` and `BenchClient` read them; `test_every_golden_file_has_an_expectation` fails
when a golden file is added without saying what modeldrop must make of it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modeldrop import signatures as sg
from modeldrop.bench.client import BenchClient, ChatRequest
from modeldrop.exo import state as st
from modeldrop.exo.client import ExoClient, ExoHTTPError
from modeldrop.exo.observe import place
from modeldrop.exo.verdicts import chat_verdict, cluster_verdict, ready_verdict, transport_verdict
from tests_selftest.support import DATA

GOLDEN = DATA / "exo-golden"
GENS = ("head", "v1.0.71")
MODEL = "mlx-community/Llama-3.2-1B-Instruct-4bit"
ROUTE: dict[str, tuple[int, str, bytes]] = {}  # "METHOD /path" -> (status, content type, body)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: Any) -> None:
        pass

    def _answer(self, method: str) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        status, ctype, body = ROUTE.get(f"{method} {self.path.split('?')[0]}", (404, "application/json", b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")


@pytest.fixture(scope="module")
def url() -> Any:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def raw(gen: str, name: str) -> bytes:
    return (GOLDEN / gen / name).read_bytes()


def body(gen: str, name: str) -> Any:
    return json.loads(raw(gen, name))


def serve(route: str, gen: str, name: str, status: int = 200, ctype: str = "application/json") -> None:
    ROUTE.clear()
    ROUTE[route] = (status, ctype, raw(gen, name))


def ready_state(gen: str) -> dict:
    return body(gen, "state_ready.json")


def only_instance(state: dict) -> st.Instance:
    (inst,) = st.instances(state).values()
    return inst


def node_ab(gen: str) -> tuple[str, str]:
    """(A, B): the topology's node order; EXO's placement puts B at rank 0."""
    a, b = body(gen, "state_empty.json")["topology"]["nodes"]
    return a, b


# -- ids, placement, instances ---------------------------------------------------------------------
def check_node_id(gen: str, url: str) -> None:
    serve("GET /node_id", gen, "node_id.json")
    assert ExoClient(url).node_id() == node_ab(gen)[0]


def check_placement_ring(gen: str, url: str) -> None:
    serve("GET /instance/placement", gen, "placement_ring_pipeline_2node.json")
    inst = st.parse_instance(ExoClient(url).placement(MODEL, min_nodes=2))
    a, b = node_ab(gen)
    assert inst.kind == "MlxRingInstance" and inst.is_ring and inst.shard_count == 2
    assert inst.rank_of_node(b) == 0 and inst.rank_of_node(a) == 1
    port = inst.ephemeral_port
    assert inst.hosts_by_node[b][0] == f"0.0.0.0:{port}" and inst.hosts_by_node[a][1] == f"0.0.0.0:{port}"
    assert all(len(h) == 2 for h in inst.hosts_by_node.values())


def check_placement_one(gen: str, url: str) -> None:
    inst = st.parse_instance(body(gen, "placement_min_nodes_1.json"))
    assert inst.kind == "MlxRingInstance" and len(inst.node_ids) == 1 and inst.shard_count == 1
    v = transport_verdict(inst, {1: inst.node_ids[0]}, {}, {}, {1: []})
    assert v.ok and "1-node instance" in v.summary


def check_placement_422(gen: str, url: str) -> None:
    serve("GET /instance/placement", gen, "placement_bad_meta_422.json", 422)
    with pytest.raises(ExoHTTPError) as e:
        ExoClient(url).placement(MODEL, instance_meta="MlxRingInstance")
    assert e.value.status == 422 and "Input should be 'MlxRing' or 'MlxJaccl'" in e.value.message


def check_placement_400(gen: str, url: str) -> None:
    serve("GET /instance/placement", gen, "placement_error_400.json", 400)
    inst, v = place(ExoClient(url), MODEL, "Pipeline", "MlxRing", 3)
    assert inst is None and v is not None and "No cycles found with sufficient memory" in v.summary
    assert sg.match("placement", http={"status": 400, "body": v.details["body"]}, facts=v.facts)[0].id == "C1x"


def check_previews(gen: str, url: str) -> None:
    previews = body(gen, "previews.json")["previews"]
    placed = [st.parse_instance(p["instance"]) for p in previews if p["instance"]]
    assert placed and all(i.model_id == MODEL and i.kind in ("MlxRingInstance", "MlxJacclInstance") for i in placed)
    assert all(p["error"] for p in previews if p["instance"] is None)


def check_jaccl(gen: str, url: str) -> None:
    inst = st.parse_instance(body(gen, "placement_jaccl_tensor_2node.json"))
    a, b = node_ab(gen)
    assert inst.kind == "MlxJacclInstance" and not inst.is_ring and set(inst.jaccl_coordinators) == {a, b}
    assert inst.jaccl_coordinators[b].startswith("0.0.0.0:")  # rank 0 listens; rank 1 dials its address
    ids = {1: a, 2: b}
    assert transport_verdict(inst, ids, {}, {}, {1: [], 2: []}, {1: ["rank 1 MLX_JACCL_COORDINATOR: x"],
                                                                 2: ["rank 0 MLX_JACCL_COORDINATOR: x"]}).ok
    assert not transport_verdict(inst, ids, {}, {}, {1: [], 2: []}, {1: [], 2: []}).ok


def check_create(gen: str, url: str) -> None:
    serve("POST /instance", gen, "create_instance_response.json")
    got = ExoClient(url).create_instance(body(gen, "placement_ring_pipeline_2node.json"))
    assert got["command_id"] and got["model_card"]["modelId"] == MODEL
    assert ("reasoningDialect" in got["model_card"]) is (gen == "head")


def check_instance_get(gen: str, url: str) -> None:
    serve("GET /instance/x", gen, "instance_get.json")
    inst = st.parse_instance(ExoClient(url).get_instance("x"))
    assert inst.model_id == MODEL and inst.shard_count == 2 and len(inst.node_ids) == 2


def check_instance_404(gen: str, url: str, name: str = "instance_get_404.json") -> None:
    serve("GET /instance/x", gen, name, 404)
    assert ExoClient(url).get_instance("x") is None


def check_await_absent(gen: str, url: str) -> None:
    status_line, text = raw(gen, "instance_await_absent.txt").decode().split("\n", 1)
    assert status_line == "status 404"
    ROUTE.clear()
    ROUTE["GET /instance/await"] = (404, "application/json", text.encode())
    assert ExoClient(url).get_instance("await") is None


def check_await_ready(gen: str, url: str) -> None:
    lines = raw(gen, "instance_await_ready.sse").decode().splitlines()
    assert lines[0] == ": keep-alive"
    msg = json.loads(next(x for x in lines if x.startswith("data: "))[6:])
    inst = st.parse_instance(msg["instance"])  # tag kept, snake_case body
    assert msg["type"] == "ready" and inst.kind == "MlxRingInstance"
    assert inst.node_to_runner == only_instance(ready_state(gen)).node_to_runner and inst.shard_count == 2


def check_state_path(gen: str, url: str) -> None:
    assert body(gen, "state_path_nodeToRunner.json") == only_instance(ready_state(gen)).node_to_runner


# -- /state ---------------------------------------------------------------------------------------
def check_state_empty(gen: str, url: str, name: str = "state_empty.json") -> None:
    serve("GET /state", gen, name)
    view = st.cluster_view(ExoClient(url).state())
    a, b = node_ab(gen)
    assert view.friendly[a] == "studio-1" and view.topology.both_ways(a, b)
    assert cluster_verdict({1: a, 2: b}, {1: view, 2: view}, 2).ok
    assert st.instances(body(gen, name)) == {}


def check_state_ready(gen: str, url: str) -> None:
    s = ready_state(gen)
    inst = only_instance(s)
    p = st.instance_progress(s, inst.instance_id)
    assert p.ready and ready_verdict(p, True, None, False, 3.0).ok
    dls = st.downloads_for_model(s, MODEL)
    assert {d.node_id for d in dls} == set(inst.node_ids) and all(d.kind == "DownloadCompleted" for d in dls)
    # DownloadCompleted carries the runner's own shard
    assert download_ranks(s) == {n: inst.rank_of_node(n) for n in inst.node_ids}


def download_ranks(s: dict) -> dict[str, int]:
    """{node id: deviceRank of the shard in its DownloadCompleted}."""
    out = {}
    for nid, entries in s["downloads"].items():
        for e in entries:
            shard = st.untag(st.pick(st.untag(e)[1], "shardMetadata"))[1]
            out[nid] = st.pick(shard, "deviceRank")
    return out


def check_state_failed(gen: str, url: str, name: str = "state_failed.json") -> None:
    s = body(gen, name)
    inst = only_instance(s)
    p = st.instance_progress(s, inst.instance_id)
    v = ready_verdict(p, True, None, False, 3.0)
    (rid, msg), = p.failures.items()
    nid = next(n for n, r in inst.node_to_runner.items() if r == rid)
    assert not v.ok and v.facts["runner_failed"] and st.cluster_view(s).friendly[nid] in v.summary
    assert f"node {nid[:12]}" in v.summary
    if gen == "v1.0.71":  # only the exit cause; the runner's error is in the log
        assert msg == "Terminated (exitcode=1)"
    else:
        assert "Couldn't connect (error: 60)" in v.summary
    assert "F8" in [m.id for m in sg.match("placement", state=s, facts=v.facts)]


def check_failed_peer_ready(gen: str, url: str) -> None:
    check_state_failed(gen, url, "state_failed_peer_ready.json")
    s = body(gen, "state_failed_peer_ready.json")
    p = st.instance_progress(s, only_instance(s).instance_id)
    assert any(x.ready for x in p.statuses.values()) and not p.ready


def check_stale_failed(gen: str, url: str) -> None:
    s = body(gen, "state_stale_failed_no_instance.json")
    assert st.instances(s) == {} and any(r.failed for r in st.runners(s).values())
    p = st.instance_progress(s, only_instance(ready_state(gen)).instance_id)
    assert not p.present and p.failures == {}  # a stale RunnerFailed of no instance is not this instance's
    assert ready_verdict(p, True, None, False, 9.0).facts == {"vanished": True}


def check_map_empty(gen: str, url: str) -> None:
    s = body(gen, "state_node_to_runner_empty.json")
    inst = only_instance(s)
    assert inst.node_to_runner == {} and inst.shard_count == 2
    v = transport_verdict(inst, dict(enumerate(node_ab(gen), 1)), {}, {}, {1: [], 2: []})
    assert not v.ok and v.facts["no_runner_map"]
    assert [m.id for m in sg.match("transport", facts=v.facts)] == ["X-NO-RUNNER-MAP"]


def check_loading(gen: str, url: str) -> None:
    s = body(gen, "state_loading.json")
    p = st.instance_progress(s, only_instance(s).instance_id)
    assert not p.ready and "RunnerLoading(3/8)" in p.labels().values() and "RunnerWarmingUp" in p.labels().values()
    v = ready_verdict(p, True, 60.0, False, 70.0)
    kinds = {d.kind for d in st.downloads_for_model(s, MODEL)}
    assert "DownloadOngoing" in kinds and v.facts["stalled"]
    got = [m.id for m in sg.match("placement", state=s, facts={**v.facts, "model_id": MODEL})]
    assert "D1" in got and "F2" in got


# -- models ---------------------------------------------------------------------------------------
def check_models(gen: str, url: str) -> None:
    serve("GET /v1/models", gen, "models.json")
    c = ExoClient(url)
    rows = c.models()
    assert len(rows) > 20 and c.has_card(MODEL) and not c.has_card("modeldrop/no-such-model")
    assert all(("reasoning_dialect" in r) is (gen == "head") for r in rows)


def check_models_downloaded(gen: str, url: str) -> None:
    serve("GET /v1/models", gen, "models_downloaded.json")
    assert ExoClient(url).downloaded_model_ids() == [MODEL]


# -- chat and bench -------------------------------------------------------------------------------
def chat(url: str, gen: str, name: str, stream: bool, bench: bool = False, status: int = 200) -> Any:
    is_sse = raw(gen, name).startswith(b":")
    path = "/bench/chat/completions" if bench else "/v1/chat/completions"
    serve(f"POST {path}", gen, name, status, "text/event-stream" if is_sse else "application/json")
    client = BenchClient(url, MODEL)
    req = ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=stream)
    if bench:
        req.endpoint = path
    try:
        return client.send(req)
    finally:
        client.close()


def check_chat_stream(gen: str, url: str) -> None:
    rec = chat(url, gen, "chat_stream.sse", True)
    assert rec.ok and rec.saw_done and rec.text == "Hello" and rec.reasoning_text == "Hmm", rec.error
    assert rec.finish_reason == "stop" and rec.usage["total_tokens"] == 15
    assert rec.generation_stats["generation_tokens"] == 3
    assert rec.t_first_token is not None and rec.prefill_progress and rec.keepalives == 1
    _server_figures(rec)


def _server_figures(rec: Any) -> None:
    """EXO's generation_stats as the case JSON shows them (peak memory: `in_bytes` in SSE, `inBytes` in JSON)."""
    assert (rec.server_generation_tps, rec.server_prompt_tps, rec.peak_memory_bytes) == (50.0, 100.0, 123456789)


def check_chat_nonstream(gen: str, url: str) -> None:
    rec = chat(url, gen, "chat_nonstream.json", False)
    assert rec.ok and rec.text == "Hello" and rec.reasoning_text == "Hmm" and rec.completion_tokens == 3


def check_chat_error(gen: str, url: str) -> None:
    rec = chat(url, gen, "chat_stream_error.sse", True)
    assert rec.error_kind == "stream_error" and "Runner shutdown before completing command" in rec.error
    v = chat_verdict([{"node": 1, "stream": True, "error": rec.error, "error_kind": rec.error_kind, "status": 200}])
    assert not v.ok and "H2" in [m.id for m in sg.match("chat", facts=v.facts)]


def check_chat_toolcall(gen: str, url: str) -> None:
    rec = chat(url, gen, "chat_stream_toolcall.sse", True)
    assert rec.ok and rec.finish_reason == "tool_calls" and len(rec.chunk_times) == 1 and rec.saw_done


def check_bench_nonstream(gen: str, url: str) -> None:
    rec = chat(url, gen, "bench_nonstream.json", False, bench=True)
    assert rec.ok and rec.usage is None and rec.completion_tokens == 3 and rec.text == "HmmHello"
    assert rec.prompt_tokens == 12  # usage is null: the prompt count comes from generation_stats
    _server_figures(rec)
    assert isinstance(body(gen, "bench_nonstream.json")["power_usage"], dict)


def check_bench_stream(gen: str, url: str) -> None:
    rec = chat(url, gen, "bench_stream.sse", True, bench=True)
    assert rec.ok and rec.completion_tokens == 3, rec.error
    _server_figures(rec)
    if gen == "v1.0.71":  # v1.0.71's bench answers a JSON body even to stream=true
        assert rec.text == "HmmHello" and rec.usage is None
    else:
        assert rec.text == "Hello" and rec.saw_done


def check_no_instance(gen: str, url: str) -> None:
    rec = chat(url, gen, "chat_no_instance_404.json", False, status=404)
    assert rec.status == 404 and "No instance found for model" in rec.error
    assert "H1" in [m.id for m in sg.match("chat", http={"status": 404, "error": rec.error})]


EXPECT: dict[str, Callable[[str, str], None]] = {
    "node_id.json": check_node_id, "placement_ring_pipeline_2node.json": check_placement_ring,
    "placement_min_nodes_1.json": check_placement_one, "placement_bad_meta_422.json": check_placement_422,
    "placement_error_400.json": check_placement_400, "previews.json": check_previews,
    "placement_jaccl_tensor_2node.json": check_jaccl,
    "state_rdma_topology.json": lambda g, u: check_state_empty(g, u, "state_rdma_topology.json"),
    "create_instance_response.json": check_create, "state_empty.json": check_state_empty,
    "state_ready.json": check_state_ready, "state_failed.json": check_state_failed,
    "state_failed_peer_ready.json": check_failed_peer_ready, "state_stale_failed_no_instance.json": check_stale_failed,
    "state_node_to_runner_empty.json": check_map_empty, "state_loading.json": check_loading,
    "instance_get.json": check_instance_get, "instance_get_404.json": check_instance_404,
    "instance_await_ready.sse": check_await_ready, "instance_await_absent.txt": check_await_absent,
    "state_path_nodeToRunner.json": check_state_path, "models.json": check_models,
    "models_downloaded.json": check_models_downloaded, "chat_stream.sse": check_chat_stream,
    "chat_nonstream.json": check_chat_nonstream, "chat_stream_error.sse": check_chat_error,
    "chat_stream_toolcall.sse": check_chat_toolcall, "bench_nonstream.json": check_bench_nonstream,
    "bench_stream.sse": check_bench_stream, "chat_no_instance_404.json": check_no_instance,
}
FILES = [(g, p.name) for g in GENS for p in sorted((GOLDEN / g).iterdir()) if p.name != "INDEX.tsv"]


def test_every_golden_file_has_an_expectation() -> None:
    for gen in GENS:
        indexed = {line.split("\t")[0] for line in (GOLDEN / gen / "INDEX.tsv").read_text().splitlines() if line}
        assert indexed == {n for g, n in FILES if g == gen}, f"{gen}: INDEX.tsv and files disagree"
    missing = sorted({n for _, n in FILES} - set(EXPECT))
    assert not missing, f"golden files with no expectation: {missing}"


@pytest.mark.parametrize("gen,name", FILES, ids=[f"{g}/{n}" for g, n in FILES])
def test_golden_file_through_modeldrop(gen: str, name: str, url: str) -> None:
    EXPECT[name](gen, url)

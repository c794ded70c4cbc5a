"""Every HTTP call has a total bound (connect, headers and body): a server that trickles one byte a second
cannot hold the EXO client, the benchmark client (streamed or not), the run facts or the load barrier past
the bound they were given, and a cut connection never harms the next call."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest

from modeldrop import httpdeadline
from modeldrop.bench import load
from modeldrop.bench.client import BenchClient, ChatRequest, quick_chat
from modeldrop.exo.client import ExoClient, ExoUnreachable
from modeldrop.facts import EXO_NODE_ID_TIMEOUT_S, RunFacts
from tests_selftest.support.trickle_server import MODES, TrickleServer

pytestmark = pytest.mark.timeout(90)
SLACK_S = 1.5  # scheduling on a loaded 2-core machine; far below one more trickled byte per second of bound
CHAT_BODY = json.dumps({"id": "c", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()


@pytest.fixture
def trickle(request):
    servers: list[TrickleServer] = []

    def make(body: bytes, mode: str = "length", **kw) -> TrickleServer:
        servers.append(TrickleServer(body, mode, **kw))
        return servers[-1]
    yield make
    for s in servers:
        s.stop()


def _timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


@pytest.mark.parametrize("mode", MODES)
def test_node_id_ends_at_its_bound_whatever_trickles(trickle, mode):
    srv = trickle(b'"' + b"n" * 64 + b'"', mode)
    client = ExoClient(srv.url)
    t0 = time.monotonic()
    with pytest.raises(ExoUnreachable) as exc:
        client.node_id(timeout_s=2)
    took = time.monotonic() - t0
    assert 2.0 <= took < 2.0 + SLACK_S, took
    msg = str(exc.value)
    assert "\n" not in msg and "within 2s" in msg and f"GET {srv.url}/node_id" in msg, msg


@pytest.mark.parametrize("mode", ["length", "close"])
def test_quick_chat_ends_at_its_bound_when_the_body_trickles(trickle, mode):
    srv = trickle(CHAT_BODY, mode)
    rec, took = _timed(lambda: quick_chat(srv.url, "m", timeout_s=3))
    assert rec.error_kind == "timeout", (rec.error_kind, rec.error)
    assert 3.0 <= took < 3.0 + SLACK_S, took
    assert "within 3s" in rec.error and "\n" not in rec.error


def test_a_stream_that_trickles_ends_at_the_request_bound_before_its_stall_window(trickle):
    frames = b"".join(b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n' for _ in range(200))
    srv = trickle(frames, "length", interval_s=0.01, content_type="text/event-stream")
    client = BenchClient(srv.url, "m", request_timeout_s=2, stall_timeout_s=30)
    rec, took = _timed(lambda: client.send(ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=4)))
    client.close()
    assert rec.error_kind == "timeout" and rec.chunk_times, (rec.error_kind, rec.error, len(rec.chunk_times))
    assert 2.0 <= took < 2.0 + SLACK_S, took


def test_run_facts_exo_session_is_bounded(trickle):
    srv = trickle(b'"' + b"n" * 64 + b'"', "length")
    node = SimpleNamespace(address=lambda: "127.0.0.1")
    facts = RunFacts(SimpleNamespace(api_port=int(srv.url.rsplit(":", 1)[1])), SimpleNamespace(get=lambda k: node))
    session, took = _timed(lambda: facts.exo_session(1))
    assert session.startswith("unreachable:") and took < EXO_NODE_ID_TIMEOUT_S + SLACK_S, (session, took)


def test_load_rounds_end_while_every_thread_is_inside_a_trickled_request(trickle):
    srv = trickle(CHAT_BODY, "length")
    client = BenchClient(srv.url, "m", request_timeout_s=2)

    def make(r: int, i: int) -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=False)

    recs, took = _timed(lambda: load.run_rounds(client, make, concurrency=3, rounds=1, warmup=0))
    assert [r.error_kind for r in recs] == ["timeout"] * 3, [(r.error_kind, r.error) for r in recs]
    assert took < 2.0 + SLACK_S, took


class _WedgedClient:
    """A client whose every request hangs (a transport the total deadline cannot reach)."""

    request_timeout_s = 0.5

    def __init__(self) -> None:
        self.release = threading.Event()

    def send(self, req: ChatRequest):
        self.release.wait(30)
        raise AssertionError("released only at the end of the test")

    def close(self) -> None:
        pass


def test_load_barrier_gives_up_on_threads_stuck_in_one_request():
    client = _WedgedClient()

    def make(r: int, i: int) -> ChatRequest:
        return ChatRequest(messages=[], max_tokens=1)

    t0 = time.monotonic()
    try:
        with pytest.raises(load.BarrierTimeout) as exc:  # every thread inside a request: nothing finished
            load.run_rounds(client, make, concurrency=3, rounds=2, warmup=1, request_grace_s=0.5)
    finally:
        client.release.set()
    assert time.monotonic() - t0 < 1.0 + SLACK_S
    msg = str(exc.value)
    assert "\n" not in msg and "still in one request after 1s" in msg and "bench-load-" in msg, msg


class _KeepAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive answers after `?delay=` seconds."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        time.sleep(float(parse_qs(urlparse(self.path).query).get("delay", ["0"])[0]))
        body = b'"node-id"'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def keepalive():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_a_finished_call_deadline_never_cuts_the_connection_the_next_call_reuses(keepalive):
    s = httpdeadline.new_session()
    assert httpdeadline.request("GET", keepalive + "/a", total_s=0.5, session=s).json() == "node-id"
    # the same keep-alive connection, past the first call's deadline
    r = httpdeadline.request("GET", keepalive + "/b?delay=1.0", total_s=5, session=s)
    assert r.json() == "node-id"
    s.close()


def test_after_a_cut_the_same_client_answers_again(trickle, keepalive):
    client = ExoClient(keepalive)
    assert client.node_id(timeout_s=2) == "node-id"
    client.base_url = trickle(b'"' + b"n" * 64 + b'"', "length").url
    with pytest.raises(ExoUnreachable):
        client.node_id(timeout_s=1)
    client.base_url = keepalive
    assert client.node_id(timeout_s=2) == "node-id"

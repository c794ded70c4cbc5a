"""Benchmark stream faults, injected with a tiny socket server: every shape of "something arrives but no
token" must abort as `stalled` soon after the stall window; a moving prefill and real tokens must not. And
the round barrier is bounded: a thread that never reaches it cannot hold the others forever."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from modeldrop.bench import load
from modeldrop.bench.client import BenchClient, ChatRequest, RequestRecord
from tests_selftest.support.listener import Listener

pytestmark = pytest.mark.timeout(60)
STALL_S = 0.6
_ROLE = b'data: {"object": "chat.completion", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'


def _token(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]}
                                  ).encode() + b"\n\n"


def _prefill(done: int) -> bytes:
    return b': prefill_progress {"processed_tokens": %d, "total_tokens": 100}\n\n' % done


# name -> (what is sent every 50 ms, given the tick number); None sends nothing at all
SHAPES = {
    "keep-alive": lambda i: b": keep-alive\n\n",
    "other comment lines": lambda i: b": ping %d\n\n" % i,
    "role-only chunks": lambda i: _ROLE,
    "repeated prefill progress": lambda i: _prefill(7),
    "bytes without a newline": lambda i: b"x",
    "silent socket": None,
    "one token, then keep-alives": lambda i: _token("hi") if i == 0 else b": keep-alive\n\n",
}


class _StreamServer:
    """HTTP/1.0 server answering every POST with `200 text/event-stream` and then `shape(i)` every 50 ms
    until it returns None (end of body), the client leaves, or 30 s pass."""

    def __init__(self, shape):
        self.shape = shape
        self.listener = Listener(self._answer)
        self.url = self.listener.url

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next((ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(
                b"content-length")), b"0"))
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            deadline, i = time.monotonic() + 30, 0
            while time.monotonic() < deadline:
                frame = self.shape(i) if self.shape is not None else b""
                if frame is None:  # the shape is over: end the body
                    return
                try:
                    conn.sendall(frame)
                except OSError:
                    return
                i += 1
                time.sleep(0.05)  # the server's pace, not a synchronisation

    def stop(self) -> None:
        self.listener.close()


def _send(url: str, stall_s: float = STALL_S) -> tuple[RequestRecord, float]:
    client = BenchClient(url, "m", stall_timeout_s=stall_s, request_timeout_s=30)
    t0 = time.monotonic()
    rec = client.send(ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=True))
    client.close()
    return rec, time.monotonic() - t0


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.fault("bench-stall", gate="benchmarks", signature="stall")
def test_no_token_within_the_window_is_a_stall_whatever_arrives(shape):
    srv = _StreamServer(SHAPES[shape])
    try:
        rec, took = _send(srv.url)
    finally:
        srv.stop()
    assert rec.error_kind == "stalled", (rec.error_kind, rec.error)
    assert STALL_S <= took < STALL_S + 2.0, took
    assert "\n" not in rec.error


def test_moving_prefill_then_tokens_is_not_a_stall():
    frames = [_prefill(10 * (i + 1)) for i in range(20)] + [_token("a"), _token("b"), b"data: [DONE]\n\n"]
    srv = _StreamServer(lambda i: frames[i] if i < len(frames) else None)
    try:
        rec, took = _send(srv.url, stall_s=0.4)  # 1 s of prefill in 50 ms steps: longer than the window
    finally:
        srv.stop()
    assert rec.ok and rec.text == "ab" and len(rec.prefill_progress) == 20, (rec.error_kind, rec.error)
    assert took >= 1.0


class _StuckClient:
    """A client whose thread 1 never returns from its warm-up request (a wedged connection)."""

    def __init__(self):
        self.release = threading.Event()

    def send(self, req: ChatRequest) -> RequestRecord:
        if req.tag == "stuck":
            self.release.wait(30)
        return RequestRecord(tag=req.tag, endpoint="/v1/chat/completions", stream=True, wall_start=0, t_send=0)

    def close(self) -> None:
        pass


@pytest.mark.fault("bench-barrier-wedged", gate="benchmarks", signature="barrier")
def test_round_barrier_is_bounded():
    client = _StuckClient()

    def make(r: int, i: int) -> ChatRequest:
        return ChatRequest(messages=[], max_tokens=1, tag="stuck" if (r == 0 and i == 1) else "")

    t0 = time.monotonic()
    try:
        with pytest.raises(load.BarrierTimeout) as exc:
            load.run_rounds(client, make, concurrency=3, rounds=2, warmup=0, barrier_timeout_s=1.0)
    finally:
        client.release.set()
    assert time.monotonic() - t0 < 4
    assert "\n" not in str(exc.value) and "1s" in str(exc.value)

"""Serving one chat request over HTTP, with exo's framing and the chat fault switches.

Contract: non-stream replies are ``200 application/json`` sent before generation runs (chunked),
so a failure mid-generation shows as a truncated body; streams start with ``: keep-alive``,
repeat it after ``keepalive_s`` of silence, send ``: prefill_progress``, one ``data:`` chunk per
token (the last carries ``finish_reason`` and ``usage``; text before ``</think>`` goes in
``reasoning_content`` when the request thinks, see ``chat.ReasoningSplitter``), ``: generation_stats {...}`` and
``data: [DONE]``; a runner error gives exo's error chunk then ``[DONE]``; a deleted instance
ends the stream without ``[DONE]``. Faults: ``chat_truncated_body``, ``chat_trickle_body``,
``stream_error_chunk``, ``token_rate``, ``stall_mid_stream``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import chat as C
from .chunked import ChunkedWriter, trickle


class _Pacer:
    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()

    def wait(self) -> None:
        if self.interval <= 0:
            return
        now = time.monotonic()
        if now < self.next:
            time.sleep(self.next - now)
        self.next = max(now, self.next) + self.interval


def _stall_forever(w: ChunkedWriter | None, keepalive: float, node: Any) -> None:
    """Keep the connection open sending only keep-alives (stream) or nothing (non-stream)."""
    while not node.stopped.is_set():
        node.stopped.wait(keepalive)
        if w is not None:
            w.write(C.comment("keep-alive"))


def serve_chat(h: Any, req: C.ChatRequest) -> None:
    """Stream or not as asked; v1.0.71's ``/bench`` never streams (it always answers the JSON body)."""
    if req.stream and not (req.bench and not h.node.cfg.is_new):
        _serve_stream(h, req)
    else:
        _serve_json(h, req)


def _serve_stream(h: Any, req: C.ChatRequest) -> None:
    node = h.node
    f, ka = node.cfg.faults, node.cfg.timing.keepalive_s
    new_gen = node.cfg.is_new
    w = ChunkedWriter(h, "text/event-stream")
    w.write(C.comment("keep-alive"))
    last = time.monotonic()
    pending: tuple[str, str] | None = None  # (delta key, text) held back for the final chunk
    split = C.ReasoningSplitter(req.split_reasoning)
    n_tokens = 0
    pacer = _Pacer(f.token_rate)
    for ev in node.chat_events(req):
        kind = ev[0]
        if kind == "wait":
            if time.monotonic() - last >= ka:
                w.write(C.comment("keep-alive"))
                last = time.monotonic()
            continue
        last = time.monotonic()
        if kind == "prefill":
            prog = {"PrefillProgressChunk": {"model": req.model, "processed_tokens": ev[1], "total_tokens": ev[2]}}
            w.write(C.comment("prefill_progress " + json.dumps(prog, separators=(",", ":"))))
        elif kind == "token":
            n_tokens += 1
            if f.stall_mid_stream is not None and n_tokens > f.stall_mid_stream:
                _stall_forever(w, ka, node)
                return
            if f.stream_error_chunk and n_tokens > 1:
                _error_end(w, "Runner shutdown before completing command (signal=9 (Killed: 9))", new_gen)
                return
            pacer.wait()
            for piece in split.feed(ev[1]):
                if pending:
                    w.write(C.sse(C.delta_chunk(req, pending[1], new_gen, key=pending[0])))
                pending = piece
        elif kind == "gen_done":
            s = ev[1]
            if f.stream_error_chunk:
                _error_end(w, "Runner shutdown before completing command (signal=9 (Killed: 9))", new_gen)
                return
            for piece in split.flush():
                if pending:
                    w.write(C.sse(C.delta_chunk(req, pending[1], new_gen, key=pending[0])))
                pending = piece
            key, text = pending or ("content", "")
            use = C.usage(s["prompt_tokens"], s["generation_tokens"])
            w.write(C.sse(C.delta_chunk(req, text, new_gen, s["finish_reason"], use, key=key)))
            w.write(C.comment("generation_stats " + json.dumps(C.stats(s, "in_bytes"), separators=(",", ":"))))
            w.write(b"data: [DONE]\n\n")
            w.finish()
            return
        elif kind == "gen_error":
            if node.instance_for_model(req.model) is None:
                w.abort()
                return
            _error_end(w, ev[1], new_gen)
            return
        elif kind == "instance_gone":
            w.abort()
            return
    w.abort()


def _error_end(w: ChunkedWriter, message: str, new_gen: bool) -> None:
    w.write(C.sse(C.error_chunk(message, new_gen)))
    w.write(b"data: [DONE]\n\n")
    w.finish()


def _serve_json(h: Any, req: C.ChatRequest) -> None:
    node = h.node
    f = node.cfg.faults
    w = ChunkedWriter(h, "application/json")
    parts: dict[str, list[str]] = {"content": [], "reasoning_content": []}
    split = C.ReasoningSplitter(req.split_reasoning)
    n_tokens = 0
    pacer = _Pacer(f.token_rate)
    t0 = time.monotonic()
    for ev in node.chat_events(req):
        kind = ev[0]
        if kind == "token":
            n_tokens += 1
            if f.stall_mid_stream is not None and n_tokens > f.stall_mid_stream:
                _stall_forever(None, node.cfg.timing.keepalive_s, node)
                return
            pacer.wait()
            for key, text in split.feed(ev[1]):
                parts[key].append(text)
        elif kind == "gen_done":
            s = ev[1]
            for key, text in split.flush():
                parts[key].append(text)
            s = {**s, "elapsed_s": time.monotonic() - t0}
            data = json.dumps(C.full_body(req, "".join(parts["content"]), s, s["finish_reason"],
                                          "".join(parts["reasoning_content"]) or None, node.cfg.is_new)).encode()
            if f.chat_truncated_body:
                w.write(data[: len(data) // 2])
                w.abort()
                return
            if f.chat_trickle_body:
                trickle(w.write, data, node)
                w.finish()
                return
            w.write(data)
            w.finish()
            return
        elif kind in ("gen_error", "instance_gone"):
            w.abort()
            return
    w.abort()

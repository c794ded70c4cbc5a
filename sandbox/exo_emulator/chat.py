"""Chat-completion wire shapes: request parsing, chunks, bodies, stats.

Contract: every builder returns exactly exo's JSON — ``object: "chat.completion"`` in stream
chunks too, ``role`` repeated in every delta, null fields omitted (NEW) or sent as null (OLD),
``usage`` only on the last chunk, ``generation_stats`` in snake_case with ``peak_memory_usage``
as ``{"in_bytes": N}`` in the SSE comment and ``{"inBytes": N}`` in the bench JSON body.
Reasoning: for a card with the ``thinking`` capability, unless the request turns thinking off
(``enable_thinking: false`` or ``reasoning_effort: "none"``), the prompt is rendered with thinking
on and ``ReasoningSplitter`` routes generated text up to ``</think>`` to ``reasoning_content``
(not on ``/bench``: exo's bench skips the output parsers, so thinking arrives as ``content``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_TOKENS = 512
THINK_CLOSE = "</think>"


class RequestError(Exception):
    """A 422 FastAPI validation error; ``detail`` is the list body."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__("validation")
        self.detail = detail


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    bench: bool
    thinking_off: bool = False
    command_id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    # set by the API from the model card: True = render with thinking on and split reasoning
    thinking: bool = False
    # the template's ``enable_thinking`` (None = not passed, the template's default)
    enable_thinking: bool | None = None
    # the instance's node ids (``/bench`` ``power_usage.nodes``)
    node_ids: list[str] = field(default_factory=list)

    @property
    def split_reasoning(self) -> bool:
        """Reasoning goes to ``reasoning_content`` only on chat: ``/bench`` skips exo's output parsers."""
        return self.thinking and not self.bench

    def resolve_thinking(self, capabilities: list[str]) -> None:
        """Thinking is on for a ``thinking`` card unless the request turned it off."""
        if "thinking" in capabilities:
            self.thinking = not self.thinking_off
            self.enable_thinking = self.thinking
        else:
            self.thinking = False
            self.enable_thinking = False if self.thinking_off else None

    def params(self) -> dict[str, Any]:
        return {"messages": self.messages, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed, "bench": self.bench,
                "enable_thinking": self.enable_thinking}


def parse_chat(body: Any, bench: bool) -> ChatRequest:
    """Validate like pydantic would (422 on missing model/messages or wrong types)."""
    if not isinstance(body, dict):
        raise RequestError([{"type": "model_attributes_type", "loc": ["body"],
                             "msg": "Input should be a valid dictionary or object to extract fields from",
                             "input": body}])
    errors = []
    for key in ("model", "messages"):
        if key not in body:
            errors.append({"type": "missing", "loc": ["body", key], "msg": "Field required", "input": body})
    if "messages" in body and not isinstance(body["messages"], list):
        errors.append({"type": "list_type", "loc": ["body", "messages"], "msg": "Input should be a valid list",
                       "input": body["messages"]})
    if errors:
        raise RequestError(errors)
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
    temp = body.get("temperature")
    # exo: enable_thinking=false is the same as reasoning_effort="none"
    thinking_off = body.get("enable_thinking") is False or body.get("reasoning_effort") == "none"
    return ChatRequest(model=str(body["model"]), messages=body["messages"], stream=bool(body.get("stream", False)),
                       max_tokens=int(max_tokens), temperature=0.0 if temp is None else float(temp),
                       top_p=float(body.get("top_p") or 1.0), seed=body.get("seed"), bench=bench,
                       thinking_off=thinking_off)


class ReasoningSplitter:
    """Routes generated text to ``reasoning_content`` until ``</think>``, then to ``content``.

    ``feed(text)`` / ``flush()`` return ``[(field, text), ...]`` with non-empty texts; a possible
    start of ``</think>`` at the end of the text is held back until the next piece decides it.
    """

    def __init__(self, thinking: bool) -> None:
        self.in_think = thinking
        self.buf = ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        if not self.in_think:
            return [("content", text)] if text else []
        self.buf += text
        if THINK_CLOSE in self.buf:
            reasoning, rest = self.buf.split(THINK_CLOSE, 1)
            self.buf, self.in_think = "", False
            return [p for p in (("reasoning_content", reasoning), ("content", rest)) if p[1]]
        hold = next((k for k in range(min(len(THINK_CLOSE) - 1, len(self.buf)), 0, -1)
                     if THINK_CLOSE.startswith(self.buf[-k:])), 0)
        out, self.buf = self.buf[: len(self.buf) - hold], self.buf[len(self.buf) - hold:]
        return [("reasoning_content", out)] if out else []

    def flush(self) -> list[tuple[str, str]]:
        out, self.buf = self.buf, ""
        return [("reasoning_content" if self.in_think else "content", out)] if out else []


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


NULL_DELTA = {"content": None, "reasoning_content": None, "name": None, "tool_calls": None,
              "tool_call_id": None, "function_call": None}


def delta_chunk(req: ChatRequest, text: str | None, new_gen: bool, finish: str | None = None,
                use: dict[str, Any] | None = None, key: str = "content") -> dict[str, Any]:
    """One stream chunk; ``key`` is ``content`` or ``reasoning_content``. NEW omits nulls; OLD
    (v1.0.71) sends every field, null-filled (``delta.name``, ``choices[].usage``, ``service_tier``...)."""
    if new_gen:
        delta: dict[str, Any] = {"role": "assistant"}
        if text is not None:
            delta[key] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if finish is not None:
            choice["finish_reason"] = finish
        chunk = {"id": req.command_id, "object": "chat.completion", "created": req.created, "model": req.model,
                 "choices": [choice]}
        if use is not None:
            chunk["usage"] = use
        return chunk
    delta = {"role": "assistant", **NULL_DELTA, key: text}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, "usage": None}
    return {"id": req.command_id, "object": "chat.completion", "created": req.created, "model": req.model,
            "choices": [choice], "usage": use, "service_tier": None}


def stats(s: dict[str, Any], key: str) -> dict[str, Any]:
    """``generation_stats``; ``key`` is ``in_bytes`` (SSE comment) or ``inBytes`` (bench JSON)."""
    return {"prompt_tps": float(s["prompt_tps"]), "generation_tps": float(s["generation_tps"]),
            "prompt_tokens": s["prompt_tokens"], "generation_tokens": s["generation_tokens"],
            "peak_memory_usage": {key: int(s["peak_memory"])}, "prefix_cache_hit": "none"}


def power_usage(node_ids: list[str], elapsed_s: float, new_gen: bool) -> dict[str, Any]:
    """``/bench`` ``power_usage``: always an object (no power sampler here, so zero watts)."""
    per = {"samples": 0, "avg_sys_power": 0.0}
    if new_gen:
        per.update({"prefill_avg_sys_power": 0.0, "generation_avg_sys_power": 0.0,
                    "prefill_energy_joules": 0.0, "generation_energy_joules": 0.0})
    body: dict[str, Any] = {"elapsed_seconds": float(elapsed_s), "nodes": [{"node_id": n, **per} for n in node_ids],
                            "total_avg_sys_power_watts": 0.0, "total_energy_joules": 0.0}
    if new_gen:
        body.update({"prefill_seconds": 0.0, "generation_seconds": float(elapsed_s), "prefill_energy_joules": 0.0,
                     "generation_energy_joules": 0.0, "prefill_avg_sys_power_watts": 0.0,
                     "generation_avg_sys_power_watts": 0.0})
    return body


def full_body(req: ChatRequest, text: str, s: dict[str, Any], finish: str,
              reasoning: str | None = None, new_gen: bool = True) -> dict[str, Any]:
    """Non-stream body. NEW chat omits nulls; OLD chat and ``/bench`` (both) keep them; ``/bench``
    sends ``usage: null`` (counts are in ``generation_stats``) and a ``power_usage`` object."""
    keep_nulls = req.bench or not new_gen
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if keep_nulls:
        message = {"role": "assistant", **NULL_DELTA, "content": text, "reasoning_content": reasoning}
    elif reasoning:
        message["reasoning_content"] = reasoning
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if keep_nulls:
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    body: dict[str, Any] = {
        "id": req.command_id, "object": "chat.completion", "created": req.created, "model": req.model,
        "choices": [choice], "usage": None if req.bench else usage(s["prompt_tokens"], s["generation_tokens"]),
    }
    if keep_nulls:
        body["service_tier"] = None
    if req.bench:
        body["generation_stats"] = stats(s, "inBytes")
        body["power_usage"] = power_usage(req.node_ids, float(s.get("elapsed_s", 0.0)), new_gen)
    return body


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def error_chunk(message: str, new_gen: bool = True) -> dict[str, Any]:
    """The mid-stream error chunk; v1.0.71 also sends ``"param": null``."""
    if new_gen:
        return {"error": {"message": message, "type": "InternalServerError", "code": 500}}
    return {"error": {"message": message, "type": "InternalServerError", "param": None, "code": 500}}

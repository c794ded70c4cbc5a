"""EXO emulator reasoning split (contract §2.5): ``reasoning_content`` for a thinking card, off switches."""

from __future__ import annotations

import json

import pytest

from sandbox.exo_emulator import chat as C
from tests_selftest.support.emulator_fixtures import (  # noqa: F401, E402
    MODEL_ID,
    EmuNode,
    emu_factory,
    fresh_subnet,
    place_and_create,
    sse_lines,
    tiny_model,
    wait_cluster,
    wait_ready,
)

THINKING_CAPS = 'capabilities = ["text", "thinking", "thinking_toggle"]'
MSGS = [{"role": "user", "content": "what is two plus three"}]


# ---- unit ------------------------------------------------------------------------------------------
def test_splitter_routes_text_up_to_think_close() -> None:
    s = C.ReasoningSplitter(True)
    out = []
    for piece in ["let me ", "think</", "thi", "nk>", "\n\nfive", " </think>"]:
        out += s.feed(piece)
    out += s.flush()
    assert out == [("reasoning_content", "let me "), ("reasoning_content", "think"), ("content", "\n\nfive"),
                   ("content", " </think>")]
    s = C.ReasoningSplitter(True)
    assert s.feed("<") == [] and s.flush() == [("reasoning_content", "<")]
    s = C.ReasoningSplitter(False)
    assert s.feed("a</think>b") == [("content", "a</think>b")] and s.feed("") == [] and s.flush() == []


@pytest.mark.parametrize("extra, off", [({}, False), ({"enable_thinking": True}, False),
                                        ({"reasoning_effort": "high"}, False), ({"enable_thinking": False}, True),
                                        ({"reasoning_effort": "none"}, True)])
def test_request_thinking_switches(extra: dict, off: bool) -> None:
    req = C.parse_chat({"model": "m", "messages": MSGS, **extra}, bench=False)
    assert req.thinking_off is off
    req.resolve_thinking(["text", "thinking"])
    assert req.thinking is (not off) and req.params()["enable_thinking"] is (not off)
    req.resolve_thinking(["text"])  # not a thinking card: never split; template default unless turned off
    assert req.thinking is False and req.params()["enable_thinking"] is (False if off else None)


def test_reasoning_chunk_and_body_shapes() -> None:
    req = C.parse_chat({"model": "m", "messages": MSGS}, bench=False)
    new = C.delta_chunk(req, "hmm", True, key="reasoning_content")
    assert new["choices"][0]["delta"] == {"role": "assistant", "reasoning_content": "hmm"}
    old = C.delta_chunk(req, "hmm", False, key="reasoning_content")
    assert old["choices"][0]["delta"] == {"role": "assistant", "content": None, "reasoning_content": "hmm",
                                          "name": None, "tool_calls": None, "tool_call_id": None,
                                          "function_call": None}
    assert old["choices"][0]["usage"] is None and old["service_tier"] is None
    s = {"prompt_tokens": 3, "generation_tokens": 4}
    msg = C.full_body(req, "", s, "length", "thinking...")["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": "", "reasoning_content": "thinking..."}
    assert "reasoning_content" not in C.full_body(req, "hi", s, "length")["choices"][0]["message"]
    assert C.usage(3, 4)["completion_tokens_details"]["reasoning_tokens"] == 0
    bench = C.parse_chat({"model": "m", "messages": MSGS}, bench=True)
    bench.resolve_thinking(["text", "thinking"])
    assert bench.thinking and not bench.split_reasoning  # /bench skips the parsers: thinking arrives as content


# ---- against a running emulator -----------------------------------------------------------------------
def _chunks(lines: list[str]) -> list[dict]:
    assert lines[0] == ": keep-alive" and lines[-1] == "data: [DONE]", lines[-3:]
    return [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")]


def _joined(chunks: list[dict], key: str) -> str:
    return "".join(c["choices"][0]["delta"].get(key) or "" for c in chunks)


@pytest.mark.sandbox_run
def test_thinking_card_streams_reasoning_content(emu_factory, tiny_model) -> None:  # noqa: F811
    addr = f"127.{fresh_subnet()}.11"
    n: EmuNode = emu_factory("think", addr, [addr])
    n.stage_model(tiny_model)
    card = n.card_path()
    text = card.read_text()
    assert 'capabilities = ["text"]' in text
    card.write_text(text.replace('capabilities = ["text"]', THINKING_CAPS))
    n.start()
    wait_cluster([n])
    assert "thinking" in next(m for m in n.get("/v1/models")[1]["data"] if m["id"] == MODEL_ID)["capabilities"]
    wait_ready(n, place_and_create(n, 1))

    # thinking on (default): every generated token is reasoning (the tiny model never emits </think>) on chat;
    # /bench skips EXO's output parsers, so the same thinking text arrives as content there
    bench = _chunks(sse_lines(n, "/bench/chat/completions", {"model": MODEL_ID, "messages": MSGS, "max_tokens": 8,
                                                             "stream": True}))
    assert _joined(bench, "content") and not _joined(bench, "reasoning_content"), bench
    for path in ("/v1/chat/completions",):
        chunks = _chunks(sse_lines(n, path, {"model": MODEL_ID, "messages": MSGS, "max_tokens": 8, "stream": True}))
        assert _joined(chunks, "reasoning_content"), chunks
        deltas = [c["choices"][0]["delta"] for c in chunks]
        first_content = next((i for i, d in enumerate(deltas) if d.get("content")), len(deltas))
        assert all("content" not in d for d in deltas[:first_content]), deltas  # reasoning comes first
        use = chunks[-1]["usage"]
        assert use["completion_tokens"] == 8 and use["completion_tokens_details"]["reasoning_tokens"] == 0
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    code, reply = n.post("/v1/chat/completions", {"model": MODEL_ID, "messages": MSGS, "max_tokens": 6})
    assert code == 200, reply
    msg = reply["choices"][0]["message"]
    assert msg["reasoning_content"] and isinstance(msg["content"], str), msg
    assert reply["usage"]["completion_tokens"] == 6
    on_prompt = reply["usage"]["prompt_tokens"]

    # thinking off: only content, as for a non-thinking model
    for off in ({"enable_thinking": False}, {"reasoning_effort": "none"}):
        for path in ("/v1/chat/completions", "/bench/chat/completions"):
            chunks = _chunks(sse_lines(n, path, {"model": MODEL_ID, "messages": MSGS, "max_tokens": 8,
                                                 "stream": True, **off}))
            assert all("reasoning_content" not in c["choices"][0]["delta"] for c in chunks), chunks
            assert _joined(chunks, "content") and chunks[-1]["usage"]["completion_tokens"] == 8
        code, reply = n.post("/v1/chat/completions", {"model": MODEL_ID, "messages": MSGS, "max_tokens": 6, **off})
        assert code == 200 and "reasoning_content" not in reply["choices"][0]["message"], reply
        assert reply["choices"][0]["message"]["content"] and reply["usage"]["completion_tokens"] == 6
        tmpl = json.loads((tiny_model / "tokenizer_config.json").read_text()).get("chat_template", "")
        if "enable_thinking" in tmpl:  # the template closes an empty think block: a longer prompt
            assert reply["usage"]["prompt_tokens"] > on_prompt, (reply["usage"], on_prompt)

"""The measuring client against the calibration server: accuracy bounds and every EXO SSE quirk.

Accuracy (the deliverable): at concurrency 1 through 32 on this 2-core host the client measures
TTFT within 2 ms (p50) and decode tok/s within 1 % (p50 and mean), one token or several per SSE
chunk, against two truths:
- what the server actually did (its write time of every chunk, same CLOCK_MONOTONIC): this is
  the client's own measurement error and is asserted on every attempt;
- the server's configured schedule (TTFT, gap): this also carries the request's trip and the
  server process's scheduling lateness, so a host busy with other work (other engineers' tests
  on the same 2 cores) can spoil one run; it is measured up to 3 times and must hold once.
The printed figures come from `python -m sandbox.calibrate`, not from these tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from modeldrop.bench.calibrate import measure
from modeldrop.bench.client import BENCH_PATH, BenchClient, ChatRequest, RequestRecord, _SSEState
from sandbox.calibration_server import CalibServer, prompt_tokens_of

MODEL = "calib/model"


@pytest.fixture(scope="module")
def server() -> Iterator[CalibServer]:
    srv = CalibServer.start(model=MODEL)
    yield srv
    srv.stop()


def send(srv: CalibServer, max_tokens: int = 12, stream: bool = True, endpoint: str = "/v1/chat/completions",
         stall_timeout_s: float = 60.0, content: str = "hello there world", **calib: object) -> RequestRecord:
    client = BenchClient(srv.url, MODEL, stall_timeout_s=stall_timeout_s)
    calib = {"ttft_ms": 5, "gap_ms": 2} | calib
    rec = client.send(ChatRequest(messages=[{"role": "user", "content": content}], max_tokens=max_tokens,
                                  stream=stream, endpoint=endpoint, extra_body={"calib": calib}))
    client.close()
    return rec


# ---- accuracy ---------------------------------------------------------------------------------
# Bounds that catch a client that mis-stamps or mis-counts (the schedule is an 80 ms TTFT and 10 ms gaps:
# a chunk stamped at the wrong read, or a token counted twice, is off by tens of ms or tens of percent),
# loose enough for a 2-core machine whose other worker runs whole clusters. The precise figures are
# the calibration script's to print (`python -m sandbox.calibrate`), not a timed assertion here.
TTFT_BOUND_MS, DECODE_BOUND_PCT = 10.0, 5.0


@pytest.mark.parametrize(("concurrency", "chunk"), [(1, 1), (2, 1), (4, 1), (8, 1), (16, 1), (32, 1), (1, 4), (32, 4)])
def test_accuracy_ttft_and_decode_within_bounds(server: CalibServer, concurrency: int, chunk: int) -> None:
    def schedule_ok(m: dict) -> bool:
        return (abs(m["ttft_err_ms"]["p50"]) < TTFT_BOUND_MS and abs(m["decode_err_pct"]["p50"]) < DECODE_BOUND_PCT
                and abs(m["decode_err_pct"]["mean"]) < DECODE_BOUND_PCT)

    attempt = 0
    while True:
        attempt += 1
        server.reset_log()
        m = measure(server.url, MODEL, concurrency, ttft_ms=80.0, gap_ms=10.0, tokens=48, chunk=chunk, rounds=3,
                    server_log=server.log)
        assert m["errors"] == 0
        assert m["ttft_err_ms"]["n"] == m["ttft_lag_ms"]["n"] == 3 * concurrency
        # the client's own error, against the server's actual writes: every attempt
        assert abs(m["ttft_lag_ms"]["p50"]) < TTFT_BOUND_MS, m["ttft_lag_ms"]
        if (abs(m["decode_err_vs_sent_pct"]["p50"]) < DECODE_BOUND_PCT
                and abs(m["decode_err_vs_sent_pct"]["mean"]) < DECODE_BOUND_PCT and schedule_ok(m)) or attempt == 3:
            break
    assert abs(m["decode_err_vs_sent_pct"]["p50"]) < DECODE_BOUND_PCT, m["decode_err_vs_sent_pct"]
    assert abs(m["decode_err_vs_sent_pct"]["mean"]) < DECODE_BOUND_PCT, m["decode_err_vs_sent_pct"]
    assert schedule_ok(m), (f"after {attempt} attempts (load average {os.getloadavg()}): "
                            f"TTFT {m['ttft_err_ms']}, decode {m['decode_err_pct']}")


# ---- EXO SSE shapes ---------------------------------------------------------------------------
def test_tokens_usage_and_generation_stats(server: CalibServer) -> None:
    rec = send(server, max_tokens=12, prefill_progress=True)
    assert rec.ok and rec.saw_done and rec.finish_reason == "length"
    assert rec.completion_tokens == 12 and len(rec.chunk_times) == 12 and rec.data_events == 12
    assert rec.prompt_tokens == prompt_tokens_of([{"content": "hello there world"}])
    assert rec.text == "".join(f"w{i % 10} " for i in range(12))
    assert rec.keepalives >= 1 and len(rec.prefill_progress) == 1
    assert rec.prefill_progress[0][0] < rec.ttft
    assert rec.generation_stats is not None and rec.generation_stats["generation_tokens"] == 12
    assert rec.generation_stats["peak_memory_usage"] == {"in_bytes": 123456789}
    assert rec.response_id and rec.response_id.startswith("cmd-")
    assert rec.decode_tps == pytest.approx(rec.server_generation_tps, rel=0.1)
    assert rec.tpot == pytest.approx((rec.e2e - rec.ttft) / 11)
    assert len(rec.itls) == 11


def test_role_only_chunk_is_not_a_token(server: CalibServer) -> None:
    rec = send(server, max_tokens=6, mode="role_first", ttft_ms=40)
    assert rec.ok and rec.data_events == 7 and len(rec.chunk_times) == 6
    assert rec.ttft >= 0.039  # not the role chunk, which left at once


def test_reasoning_counts_as_output_and_ttfc_is_separate(server: CalibServer) -> None:
    rec = send(server, max_tokens=10, reasoning=4, gap_ms=10)
    assert rec.ok and rec.completion_tokens == 10
    assert rec.reasoning_text == "r0 r1 r2 r3 " and rec.text.startswith("w4 ")
    assert rec.reasoning_chunks == 4 and rec.reasoning_tokens_est == 4
    assert rec.ttfc - rec.ttft == pytest.approx(0.040, abs=0.004)


def test_reasoning_off(server: CalibServer) -> None:
    client = BenchClient(server.url, MODEL)
    rec = client.send(ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=6, enable_thinking=False,
                                  reasoning_effort="none", extra_body={"calib": {"reasoning": 4, "gap_ms": 1}}))
    assert rec.ok and rec.reasoning_chunks == 0 and rec.ttfc == rec.ttft and rec.reasoning_tokens_est == 0


def test_multi_token_chunks(server: CalibServer) -> None:
    rec = send(server, max_tokens=20, chunk=4, gap_ms=10)
    assert rec.ok and len(rec.chunk_times) == 5 and rec.completion_tokens == 20
    assert rec.first_chunk_tokens == pytest.approx(4)
    assert rec.decode_tps == pytest.approx(100.0, rel=0.02)
    assert len(rec.itls) == 4 and min(rec.itls) > 0.035


def test_error_chunk(server: CalibServer) -> None:
    rec = send(server, mode="error_chunk", error_after=3)
    assert rec.error_kind == "stream_error" and "Runner shutdown" in (rec.error or "")
    assert len(rec.chunk_times) == 3 and rec.text == "w0 w1 w2 "


def test_stream_without_done(server: CalibServer) -> None:
    rec = send(server, max_tokens=5, mode="no_done")
    assert rec.error_kind == "no_done" and len(rec.chunk_times) == 5 and rec.completion_tokens == 5


def test_stream_cut_body(server: CalibServer) -> None:
    rec = send(server, mode="cut_body", error_after=2)
    assert rec.error_kind == "truncated" and len(rec.chunk_times) == 2 and rec.text == "w0 w1 "


@pytest.mark.parametrize("mode", ["cut_body", "cut_json"])
def test_non_stream_200_with_cut_body(server: CalibServer, mode: str) -> None:
    rec = send(server, stream=False, mode=mode)
    assert rec.status == 200 and rec.error_kind == "truncated"


def test_keepalive_only_is_a_stall(server: CalibServer) -> None:
    t0 = time.perf_counter()
    rec = send(server, mode="keepalive_only", keepalive_s=0.05, stall_timeout_s=0.3)
    assert rec.error_kind == "stalled" and rec.keepalives >= 5 and not rec.chunk_times
    assert time.perf_counter() - t0 < 5


def test_exo_error_bodies(server: CalibServer) -> None:
    rec = BenchClient(server.url, "no/such-model").send(
        ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=2))
    assert rec.status == 404 and rec.error_kind == "http" and "No instance found for model no/such-model" in rec.error
    rec = send(server, mode="http_500")
    assert rec.status == 500 and "Runner shutdown" in (rec.error or "")


def test_connection_refused_is_an_error_not_an_exception() -> None:
    rec = BenchClient("http://127.0.0.1:9", MODEL, connect_timeout_s=1).send(
        ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=2))
    assert rec.error_kind == "connection" and not rec.ok


def test_non_stream(server: CalibServer) -> None:
    rec = send(server, stream=False, max_tokens=7, reasoning=2)
    assert rec.ok and rec.completion_tokens == 7 and rec.reasoning_text == "r0 r1 " and rec.text.startswith("w2")
    assert rec.e2e >= 0.005 + 6 * 0.002


def test_bench_endpoint(server: CalibServer) -> None:
    early = send(server, max_tokens=10, eos_at=4)
    assert early.completion_tokens == 4  # /v1 stops at EOS
    rec = send(server, max_tokens=10, eos_at=4, endpoint=BENCH_PATH)
    assert rec.ok and rec.completion_tokens == 10  # /bench bans EOS
    whole = send(server, max_tokens=10, stream=False, endpoint=BENCH_PATH)
    assert whole.ok and whole.generation_stats["peak_memory_usage"] == {"inBytes": 123456789}
    assert whole.server_generation_tps == pytest.approx(500.0)


# ---- the SSE parser on awkward byte boundaries ------------------------------------------------
def _chunk(content: str, **extra: object) -> bytes:
    import json
    body = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                                         "content": content}}]}
    body.update(extra)
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


def test_parser_handles_split_lines_crlf_and_usage_anywhere() -> None:
    rec = RequestRecord(tag="", endpoint="", stream=True, wall_start=0, t_send=0)
    st = _SSEState(rec, stall_timeout_s=60)
    raw = (b": keep-alive\n\n" + _chunk("Hel") + _chunk("lo", usage={"completion_tokens": 2, "prompt_tokens": 3})
           + b': generation_stats {"generation_tps": 9.0, "generation_tokens": 2}\n\ndata: [DONE]\n\n')
    for i in range(0, len(raw), 7):  # 7-byte reads split every line somewhere
        st.feed(raw[i:i + 7], t=i / 1000)
    st.finish()
    assert rec.text == "Hello" and rec.saw_done and rec.keepalives == 1
    assert rec.completion_tokens == 2 and rec.prompt_tokens == 3 and rec.server_generation_tps == 9.0
    assert len(rec.chunk_times) == 2 and rec.chunk_times[0] < rec.chunk_times[1]


def test_parser_takes_data_line_without_trailing_newline_at_eof() -> None:
    rec = RequestRecord(tag="", endpoint="", stream=True, wall_start=0, t_send=0)
    st = _SSEState(rec, stall_timeout_s=60)
    st.feed(_chunk("a") + b"data: [DONE]", t=0.1)
    st.finish()
    assert rec.saw_done and rec.text == "a"


def test_prefill_progress_is_not_a_stall_but_keepalive_alone_is() -> None:
    from modeldrop.bench.client import _Abort

    rec = RequestRecord(tag="", endpoint="", stream=True, wall_start=0, t_send=0)
    st = _SSEState(rec, stall_timeout_s=0.3)
    st.feed(b': prefill_progress {"PrefillProgressChunk": {"processed_tokens": 5, "total_tokens": 9}}\n\n', t=0.25)
    st.feed(b": keep-alive\n\n", t=0.5)  # 0.25 s after progress: fine
    assert rec.prefill_progress == [[0.25, 5, 9]] and rec.keepalives == 1
    with pytest.raises(_Abort, match=r"no new token for .*meanwhile: 2 keep-alive"):
        st.feed(b": keep-alive\n\n", t=0.6)  # 0.35 s without data or progress


def test_keep_alive_connection_is_reused_after_complete_bodies(server: CalibServer) -> None:
    client = BenchClient(server.url, MODEL)
    server.reset_log()
    for stream in (True, False, True):
        assert client.send(ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=3, stream=stream,
                                       extra_body={"calib": {"ttft_ms": 1, "gap_ms": 1}})).ok
    bad = client.send(ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=3,
                                  extra_body={"calib": {"mode": "error_chunk", "error_after": 1}}))
    after = client.send(ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=3,
                                    extra_body={"calib": {"ttft_ms": 1, "gap_ms": 1}}))
    conns = [e["conn"] for e in server.log()]
    assert bad.error_kind == "stream_error" and after.ok
    assert len(set(conns[:4])) == 1  # one connection for the complete bodies (and the aborted one)
    assert conns[4] != conns[3]  # an aborted body is not reused

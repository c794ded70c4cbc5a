"""Fakes for the benchmark layer's unit tests: request records filled as the measuring client would."""

from __future__ import annotations

from modeldrop.bench.client import RequestRecord


def rec(t_send: float, ttft: float, gap: float, n: int, per_chunk: int = 1, gen_tps: float | None = None,
        error: str | None = None, reasoning: int = 0) -> RequestRecord:
    """A record as the client would fill it: n tokens, `per_chunk` per chunk, `gap` between tokens."""
    r = RequestRecord(tag="", endpoint="/v1/chat/completions", stream=True, wall_start=0.0, t_send=t_send)
    chunks = [(i, min(i + per_chunk, n)) for i in range(0, n, per_chunk)]
    for a, b in chunks:
        r.chunk_times.append(ttft + (b - 1) * gap)
        r.chunk_chars.append(3 * (b - a))
        r.chunk_reasoning.append(b <= reasoning)
    r.t_first_token = r.chunk_times[0]
    r.t_first_content = next((t for t, rs in zip(r.chunk_times, r.chunk_reasoning, strict=True) if not rs), None)
    r.t_last_token = r.t_end = r.chunk_times[-1]
    r.usage = {"completion_tokens": n, "prompt_tokens": 10}
    if gen_tps is not None:
        r.generation_stats = {"generation_tps": gen_tps, "generation_tokens": n}
    if error:
        r.error, r.error_kind = error, "stream_error"
    return r

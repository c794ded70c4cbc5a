"""Statistics over request records: percentiles with their sample count, and phase summaries.

Contract
--------
- `dist(values)` -> {"n", "p50", "p95", "p99", "mean", "min", "max", "small_n"}; None values
  are dropped; percentiles use linear interpolation between closest ranks (numpy's default);
  `small_n` is True when n < 20, where p95/p99 are little more than the max and the report
  must say so. An empty input gives n=0 and None everywhere.
- `summarize(records)` computes the phase summary from the *measured* records (warmups must
  not be passed in). Aggregate output tok/s = sum of server completion tokens of the
  successful requests / phase wall time (first send -> last finish, all requests). exo_bench's
  `max(generation_tps) x N` is stored beside it as `exo_style_agg_tps` and labelled as such:
  it is an optimistic estimate, not a measurement. EXO's own figures from `generation_stats` stand
  beside the client's: `server_generation_tps` and `server_prompt_tps` (distributions), and
  `peak_memory_gb` (the largest `peak_memory_usage` of the case, as EXO's `Memory.in_gb`: bytes / 2^30;
  None when EXO reports none).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from modeldrop.bench.client import RequestRecord

PERCENTILES = (50, 95, 99)
SMALL_N = 20
GIB = 1024 ** 3  # EXO's Memory.in_gb divisor


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile of an ascending, non-empty sequence (numpy 'linear')."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    k = (len(sorted_values) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return float(sorted_values[lo])
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo))


def dist(values: Iterable[float | None]) -> dict[str, Any]:
    """Distribution summary with its sample count; see module contract."""
    vals = sorted(float(v) for v in values if v is not None and not math.isnan(v))
    out: dict[str, Any] = {"n": len(vals), "small_n": len(vals) < SMALL_N}
    if not vals:
        out.update({f"p{p}": None for p in PERCENTILES} | {"mean": None, "min": None, "max": None})
        return out
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(vals, p)
    out.update(mean=sum(vals) / len(vals), min=vals[0], max=vals[-1])
    return out


def fmt_dist(d: dict[str, Any], unit: str = "", scale: float = 1.0, digits: int = 1) -> str:
    """'p50 12.3 / p95 14.0 / p99 15.1 ms (n=8, n<20: p95/p99 ≈ max)' for the ledger."""
    if not d or not d.get("n"):
        return "n=0"
    parts = " / ".join(f"p{p} {d[f'p{p}'] * scale:.{digits}f}" for p in PERCENTILES)
    note = ", n<20: p95/p99 ≈ max" if d.get("small_n") else ""
    return f"{parts} {unit} (n={d['n']}{note})".replace("  ", " ")


def phase_wall(records: Sequence[RequestRecord]) -> float | None:
    """First send -> last finish over all records (perf_counter clock), in seconds."""
    if not records:
        return None
    start = min(r.t_send for r in records)
    end = max(r.t_send + (r.t_end or 0.0) for r in records)
    return end - start


def summarize(records: Sequence[RequestRecord], concurrency: int = 1) -> dict[str, Any]:
    """Phase summary of measured (non-warmup) records; see module contract.

    `concurrency` is the number of requests in flight together (N of exo's max x N)."""
    ok = [r for r in records if r.ok]
    wall = phase_wall(records)
    out_tokens = sum(r.completion_tokens or 0 for r in ok)
    decode = [r.decode_tps for r in ok]
    server = [r.server_generation_tps for r in ok]
    peaks = [p for p in (r.peak_memory_bytes for r in ok) if p is not None]
    ratios = [d / s for d, s in zip(decode, server, strict=True) if d and s]
    itls = [g for r in ok for g in r.itls]
    tokens_chunks = sum(len(r.chunk_times) for r in ok)
    cpu = sum(r.client_cpu_s for r in records)
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "error_kinds": _count(r.error_kind for r in records if not r.ok),
        "error_samples": [r.error for r in records if not r.ok][:5],
        "ttft_s": dist(r.ttft for r in ok),
        "ttfc_s": dist(r.ttfc for r in ok),
        "e2e_s": dist(r.e2e for r in ok),
        "tpot_s": dist(r.tpot for r in ok),
        "itl_s": dist(itls),
        "itl_note": "per SSE chunk, pooled over requests; a chunk may carry several tokens",
        "decode_tps": dist(decode),
        "server_generation_tps": dist(server),
        "server_prompt_tps": dist(r.server_prompt_tps for r in ok),
        "peak_memory_gb": max(peaks) / GIB if peaks else None,
        "decode_over_server_ratio": dist(ratios),
        "prompt_tokens": dist(r.prompt_tokens for r in ok),
        "completion_tokens": dist(r.completion_tokens for r in ok),
        "reasoning_tokens_est": dist(r.reasoning_tokens_est for r in ok),
        "output_tokens_total": out_tokens,
        "phase_wall_s": wall,
        "aggregate_output_tps": out_tokens / wall if wall and out_tokens else None,
        "exo_style_agg_tps": (max(s for s in server if s) * concurrency) if any(server) else None,
        "exo_style_agg_note": "exo_bench style max(generation_tps) x N: an optimistic estimate, for comparison only",
        "token_chunks": tokens_chunks,
        "tokens_per_chunk": (out_tokens / tokens_chunks) if tokens_chunks else None,
        "client_cpu_s": cpu,
        "client_cpu_us_per_token": (cpu / out_tokens * 1e6) if out_tokens else None,
    }


def _count(items: Iterable[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        key = it or "unknown"
        out[key] = out.get(key, 0) + 1
    return out

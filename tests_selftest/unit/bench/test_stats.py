"""Percentiles with n, per-request metric definitions and the phase summary (no server needed)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from modeldrop.bench.stats import dist, fmt_dist, summarize
from tests_selftest.support.bench_fakes import rec


def test_dist_matches_numpy_and_reports_n() -> None:
    vals = [random.Random(3).uniform(0, 10) for _ in range(57)]
    d = dist(vals)
    assert d["n"] == 57 and not d["small_n"]
    for p in (50, 95, 99):
        assert d[f"p{p}"] == pytest.approx(float(np.percentile(vals, p)))
    assert dist([1.0, None, 2.0])["n"] == 2
    small = dist([1.0, 2.0, 3.0])
    assert small["small_n"] and "n<20" in fmt_dist(small, "s")
    assert dist([])["n"] == 0 and dist([])["p50"] is None


def test_per_request_definitions() -> None:
    r = rec(t_send=0.0, ttft=0.2, gap=0.02, n=11, gen_tps=50.0)
    assert r.ttft == pytest.approx(0.2) and r.e2e == pytest.approx(0.4)
    assert r.tpot == pytest.approx(0.02)  # (E2E - TTFT) / (n - 1)
    assert r.decode_tps == pytest.approx(50.0)  # (n - 1) / (t_last - t_first)
    assert r.itls == pytest.approx([0.02] * 10)
    chunked = rec(t_send=0.0, ttft=0.2, gap=0.02, n=12, per_chunk=4)
    assert chunked.first_chunk_tokens == pytest.approx(4)
    assert chunked.decode_tps == pytest.approx(50.0)  # (n - n_first) / (t_last - t_first)
    thinking = rec(t_send=0.0, ttft=0.1, gap=0.01, n=10, reasoning=4)
    assert thinking.ttfc == pytest.approx(0.14) and thinking.reasoning_tokens_est == 4


def test_tokens_come_from_the_server_only() -> None:
    r = rec(0.0, 0.1, 0.01, 5)
    r.usage = None
    assert r.completion_tokens is None and r.decode_tps is None and r.tpot is None
    r.generation_stats = {"generation_tokens": 5}
    assert r.completion_tokens == 5


def test_aggregate_is_tokens_over_phase_wall_not_max_times_n() -> None:
    # two requests overlap partly: wall = first send (0.0) .. last finish (1.47 s), 30 + 30 tokens
    a = rec(t_send=0.0, ttft=0.1, gap=0.03, n=30, gen_tps=40.0)
    b = rec(t_send=0.5, ttft=0.1, gap=0.03, n=30, gen_tps=35.0)
    wall = max(a.t_send + a.t_end, b.t_send + b.t_end) - 0.0
    s = summarize([a, b], concurrency=2)
    assert s["phase_wall_s"] == pytest.approx(wall)
    assert s["aggregate_output_tps"] == pytest.approx(60 / wall)
    assert s["exo_style_agg_tps"] == pytest.approx(80.0) and "estimate" in s["exo_style_agg_note"]
    assert s["decode_over_server_ratio"]["n"] == 2


def test_errors_are_counted_and_excluded_from_latencies() -> None:
    ok = rec(0.0, 0.1, 0.01, 5)
    bad = rec(0.0, 9.0, 0.01, 5, error="Runner shutdown")
    s = summarize([ok, bad])
    assert s["errors"] == 1 and s["error_kinds"] == {"stream_error": 1} and s["error_samples"] == ["Runner shutdown"]
    assert s["ttft_s"]["n"] == 1 and s["ttft_s"]["max"] == pytest.approx(0.1)
    assert s["output_tokens_total"] == 5

"""Concurrency: N threads released together by a barrier, `rounds` times, per level (1, 2, 4, 8
by default): p50/p95/p99 end-to-end latency and TTFT with n, decode tok/s per request, aggregate
output tok/s (tokens / phase wall time; exo's max x N beside it as an estimate), errors.
"""

import pytest


@pytest.mark.bench("concurrency")
def test_concurrency(bench_case, bench_run):
    outcome = bench_run(bench_case)
    bench_run.check(outcome)

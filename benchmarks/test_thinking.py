"""Thinking: the same reasoning question with reasoning on (`enable_thinking: true`) and off
(`enable_thinking: false`, `reasoning_effort: "none"`): reasoning tokens, time to the first
content token (TTFC) beside TTFT, and total time.
"""

import pytest


@pytest.mark.bench("thinking")
def test_thinking(bench_case, bench_run):
    outcome = bench_run(bench_case)
    bench_run.check(outcome)

"""Token sweep: prompt length x output length at concurrency 1,, one case per pair.

Each case: `repeat` requests of a prompt sized to the target token count (model tokenizer, or
calibrated by the server's usage), to /bench/chat/completions when EXO has it (exact output
length, no prefix cache). Reports TTFT, TPOT, ITL, E2E, decode tok/s vs the server's
generation_tps; plots decode tok/s and TTFT vs prompt length.
"""

import pytest


@pytest.mark.bench("token_sweep")
def test_token_sweep(bench_case, bench_run):
    outcome = bench_run(bench_case)
    bench_run.check(outcome)

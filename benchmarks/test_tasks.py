"""Tasks with checkable answers (exact string, arithmetic, JSON shape, a short instruction):
pass rate with the failing answers quoted. Report-only unless `--bench-task-min-pass` is given;
request errors always fail the case.
"""

import pytest


@pytest.mark.bench("tasks")
def test_task(bench_case, bench_run):
    outcome = bench_run(bench_case)
    bench_run.check(outcome)

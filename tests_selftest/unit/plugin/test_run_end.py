"""How a run ends, through the real plugin: exit codes that mean what they say (a targeted rerun with no reusable
upstream exits 6, with one 0), the end-of-run summary in the terminal, --collect-only writing nothing, a run
interrupted mid-benchmark keeping the summary of what finished, and benchmarks that cannot start (nodes that
cannot be reached): one line with the fixing command, every case skipped without a traceback, exit 6."""

from __future__ import annotations

import json
import subprocess
import sys

from modeldrop.ledger.summary import EXIT_BLOCKED
from tests_selftest.support import REPO
from tests_selftest.support.plugin_kit import BASE, PYTEST, latest, make_suite, subprocess_env, trace


def test_a_targeted_rerun_exits_6_without_a_reusable_upstream_and_0_with_one(pytester):
    make_suite(pytester)
    result = pytester.runpytest(*BASE, "-k", "transport")
    assert result.ret == EXIT_BLOCKED, result.stdout.str()
    assert trace(pytester) == []
    result.stdout.fnmatch_lines(["result: blocked at transport (exit 6): no reusable pass for preflight: never*"])
    assert json.loads((latest(pytester) / "run.json").read_text())["exit_status"] == EXIT_BLOCKED
    green = pytester.runpytest(*BASE)
    assert green.ret == 0
    green.stdout.fnmatch_lines(["result: green (exit 0)", "gates (*in all):", "  preflight * passed *"])
    trace(pytester)
    rerun = pytester.runpytest(*BASE, "-k", "transport")
    assert rerun.ret == 0 and trace(pytester) == ["transport"]
    rerun.stdout.fnmatch_lines(["result: partial (exit 0): the selected gates passed*"])


def test_collect_only_writes_nothing_and_prints_no_next_command(pytester):
    make_suite(pytester)
    result = pytester.runpytest(*BASE, "--collect-only", "-q")
    assert result.ret == 0
    assert "NEXT_COMMAND" not in result.stdout.str() and "run folder" not in result.stdout.str()
    assert not (pytester.path / "reports").exists(), "a look at the gates is not a run"


BENCH_TESTS = '''
import json
import pytest

SUMMARY = {"requests": 2, "ok": 2, "errors": 0, "phase_wall_s": 1.0, "aggregate_output_tps": 64.0,
           "ttft_s": {"mean": 0.1, "p50": 0.1, "p99": 0.12}, "tpot_s": {"mean": 0.02, "p50": 0.02, "p99": 0.03},
           "itl_s": {"mean": 0.02, "p50": 0.02, "p99": 0.03}, "e2e_s": {"mean": 0.5, "p50": 0.5, "p99": 0.6},
           "decode_tps": {"p50": 50.0}, "server_generation_tps": {"p50": 51.0}}


@pytest.mark.bench("concurrency")
@pytest.mark.parametrize("case", ["concurrency-c1", "concurrency-c2", "concurrency-c4"])
def test_concurrency(case, run_folder):
    if case == "concurrency-c2":
        raise KeyboardInterrupt  # Ctrl-C in the middle of the second case
    run_folder.write_json(f"bench/{case}.json", {"case_id": case, "phase": "concurrency", "summary": SUMMARY})
'''


def test_a_run_interrupted_mid_benchmark_still_summarises_what_finished(pytester):
    make_suite(pytester)
    (pytester.path / "benchmarks").mkdir()
    (pytester.path / "benchmarks" / "test_bench.py").write_text(BENCH_TESTS)
    done = subprocess.run([*PYTEST, "-p", "no:cacheprovider", "benchmarks", *BASE[1:]], cwd=pytester.path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    run = json.loads((latest(pytester) / "run.json").read_text())
    assert run["result"]["status"] == "interrupted" and run["exit_status"] == 2
    assert [r["case"] for r in run["benchmarks"]] == ["concurrency-c1"] and run["benchmarks"][0]["output_tps"] == 64.0
    assert "result: interrupted (exit 2)" in done.stdout
    assert any(ln.split()[:2] == ["concurrency-c1", "passed"] for ln in done.stdout.splitlines()), done.stdout
    handoff = (latest(pytester) / "handoff.md").read_text()
    assert "| concurrency-c1 | passed | 2 | 0 | 100.0 | 100.0 | 120.0 |" in handoff


def test_benchmarks_against_nodes_that_cannot_be_reached_say_so_once_and_exit_6(tmp_path):
    env = tmp_path / "test.env"
    env.write_text(f"MODEL_ID=org/tiny-model\nNODES=mdsbx@127.0.0.1:1,mdsbx@127.0.0.1:2\n"
                   f"RUN_REPORT_DIR={tmp_path / 'reports'}\nPROFILE_PATH={tmp_path / 'profiles.json'}\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "--env-file", str(env), "-p",
                           "no:cacheprovider", "-rs"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == EXIT_BLOCKED, out
    assert "Traceback" not in out and len(out.splitlines()) < 60, out
    said = [ln for ln in out.splitlines() if "to fix:" in ln]
    assert len(said) == 1 and "benchmarks cannot start: cannot fingerprint the cluster (NodeError: node1" in said[0]
    next_cmd = next(ln for ln in out.splitlines() if ln.startswith("NEXT_COMMAND: "))
    assert next_cmd.endswith(f"gates/ --model org/tiny-model --env-file {env} -k preflight") and len(next_cmd) < 200
    assert said[0].endswith(next_cmd.removeprefix("NEXT_COMMAND: ")), "the one line names the fixing command"
    assert " skipped in " in out.splitlines()[-1] and "error" not in out.splitlines()[-1]

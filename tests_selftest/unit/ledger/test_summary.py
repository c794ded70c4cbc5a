"""The end-of-run summary on a real Ledger: the result and exit status of each kind of run, the benchmark table
with the case JSONs' own numbers (per node too), where the model serves, NEXT_COMMAND when the benchmarks
cannot start or fail (never a list of cases), a run interrupted mid-benchmark, and run.json held to its schema
(which refuses a blocked run that says exit 0)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

from modeldrop.exo.serving import serving_block
from modeldrop.ledger import GateRecord, Ledger, RunFolder, RunState
from modeldrop.ledger.summary import EXIT_BLOCKED
from tests_selftest.support.runjson_check import check

ORDER = ["preflight", "node1_download", "node1_verify", "node1_canary", "parity", "startup", "cluster", "placement",
         "transport", "chat"]
BASE = ["pytest", "gates/", "--model", "org/m"]
BENCH = ["pytest", "benchmarks/", "--model", "org/m"]


def ledger(tmp_path: Path) -> Ledger:
    folder = RunFolder.create(tmp_path / "reports", "org--m")
    state = RunState(run_id=folder.run_id, started=time.time(), model_id="org/m", nodes=["studio1"],
                     model_dirs=["~/m"], command=BASE, base_argv=BASE, bench_argv=BENCH, order=list(ORDER),
                     gates={g: GateRecord(g) for g in ORDER})
    lg = Ledger(folder, state)
    lg.timeline = SimpleNamespace(touch=lambda: None, flush=lambda: None, png=None)  # no picture to draw here
    lg.begin()
    return lg


def run_json(lg: Ledger) -> dict:
    path = lg.folder.path / "run.json"
    assert check(path) == [], check(path)
    return json.loads(path.read_text())


def pass_all(lg: Ledger, gates: list[str]) -> None:
    for g in gates:
        lg.gate_start(g)
        lg.gate_result(g, "passed", duration=1.5)


def test_green_partial_failed_blocked_interrupted_and_their_exit_statuses(tmp_path):
    green = ledger(tmp_path / "a")
    assert run_json(green)["result"]["status"] == "running" and run_json(green)["exit_status"] is None
    pass_all(green, ORDER)
    assert green.exit_status(0) == 0
    green.end(0)
    assert run_json(green)["result"] == {"status": "green", "at": None, "reason": None}
    assert green.summary_lines()[0] == "result: green (exit 0)"
    assert "  placement       passed      1.5 s" in green.summary_lines()

    partial = ledger(tmp_path / "b")  # -k transport with every upstream reused
    for g in ORDER[:-2]:
        partial.gate_reused(g, time.time(), "earlier-run", {})
    partial.deselect(["chat"])
    pass_all(partial, ["transport"])
    assert partial.exit_status(0) == 0
    partial.end(0)
    assert partial.result()["status"] == "partial"

    blocked = ledger(tmp_path / "c")  # -k transport with no reusable upstream
    blocked.deselect(ORDER[:-2] + ["chat"])
    blocked.gate_result("transport", "skipped", "no reusable pass for preflight: never passed", missing_pass=True)
    assert blocked.exit_status(0) == EXIT_BLOCKED, "a targeted rerun that verified nothing never exits 0"
    blocked.end(EXIT_BLOCKED)
    doc = run_json(blocked)
    assert doc["result"] == {"status": "blocked", "at": "transport",
                             "reason": "no reusable pass for preflight: never passed"} and doc["exit_status"] == 6

    failed = ledger(tmp_path / "d")
    pass_all(failed, ORDER[:7])
    failed.gate_result("placement", "failed", "RunnerFailed on node2")
    assert failed.exit_status(1) == 1
    failed.end(1)
    assert run_json(failed)["result"] == {"status": "failed", "at": "placement", "reason": "RunnerFailed on node2"}

    nothing = ledger(tmp_path / "e")
    nothing.deselect(ORDER)
    assert nothing.exit_status(0) == EXIT_BLOCKED
    nothing.end(EXIT_BLOCKED)
    assert run_json(nothing)["result"]["reason"] == "nothing was verified: no gate or benchmark ran"

    stopped = ledger(tmp_path / "f")
    stopped.gate_start("preflight")
    stopped.end(2, "KeyboardInterrupt (Ctrl-C)")
    assert run_json(stopped)["result"] == {"status": "interrupted", "at": "preflight",
                                           "reason": "KeyboardInterrupt (Ctrl-C)"}


def test_the_schema_refuses_a_run_json_that_says_success_for_a_blocked_run(tmp_path):
    lg = ledger(tmp_path)
    lg.deselect(ORDER[:-2] + ["chat"])
    lg.gate_result("transport", "skipped", "no reusable pass for preflight", missing_pass=True)
    lg.end(EXIT_BLOCKED)
    path = lg.folder.path / "run.json"
    doc = json.loads(path.read_text())
    for lie, where in (({"exit_status": 0}, "exit_status"), ({"result": {"status": "fine", "at": None,
                                                                          "reason": None}}, "result/status"),
                       ({"serving": {"model": "org/m"}}, "serving")):
        path.write_text(json.dumps({**doc, **lie}))
        assert check(path), f"the schema let through {lie}"
        assert any(e.startswith(where) or e.startswith("(top)") for e in check(path)), check(path)
    path.write_text(json.dumps(doc))  # the session's own check of every run.json would (rightly) refuse the lie


def case_payload(case: str, phase: str, **extra: object) -> dict:
    def dist(mean: float, p50: float, p99: float) -> dict:
        return {"n": 8, "mean": mean, "p50": p50, "p95": p99, "p99": p99, "min": p50, "max": p99, "small_n": True}
    summary = {"requests": 8, "ok": 8, "errors": 0, "ttft_s": dist(0.2142, 0.2101, 0.2935),
               "tpot_s": dist(0.0213, 0.0209, 0.0411), "itl_s": dist(0.0211, 0.0004, 0.0436),
               "e2e_s": dist(0.281, 0.279, 0.295), "decode_tps": dist(47.1, 47.9, 52.0),
               "server_generation_tps": dist(48.0, 48.5, 53.0), "aggregate_output_tps": 112.04,
               "phase_wall_s": 2.5, **extra}
    return {"case_id": case, "phase": phase, "summary": summary, "reused_from": None}


def test_the_benchmark_table_has_the_case_json_numbers(tmp_path):
    lg = ledger(tmp_path)
    lg.deselect(ORDER, bench_only=True)
    per_node = {"node1": {"threads": 1, "requests": 4, "errors": 0, "p50_latency_s": 0.27, "p50_ttft_s": 0.2,
                          "decode_tps": 49.0, "output_tokens": 128, "aggregate_tps": 56.0},
                "node2": {"threads": 1, "requests": 4, "errors": 0, "p50_latency_s": 0.29, "p50_ttft_s": 0.22,
                          "decode_tps": 46.0, "output_tokens": 128, "aggregate_tps": 55.5}}
    lg.folder.write_json("bench/concurrency-c2.json", case_payload(
        "concurrency-c2", "concurrency", per_node=per_node, server_prompt_tps={"p50": 812.5}, peak_memory_gb=4.25))
    lg.bench_result("test_concurrency[concurrency-c2]", "passed", duration=3.0)
    lg.folder.write_json("bench/token_sweep-pp128-tg32.json", case_payload("token_sweep-pp128-tg32", "token_sweep"))
    lg.bench_result("test_token_sweep[token_sweep-pp128-tg32]", "passed", duration=3.0)
    lg.end(0)
    text = "\n".join(lg.summary_lines())
    row = next(ln for ln in lg.summary_lines() if ln.startswith("  concurrency-c2") and "passed" in ln).split()
    assert row[1:] == ["passed", "8", "0", "214.2", "210.1", "293.5", "21.3", "20.9", "41.1", "21.1", "0.4", "43.6",
                       "0.279", "0.295"], row
    tput = [ln.split() for ln in lg.summary_lines() if ln.startswith("  concurrency-c2") and "passed" not in ln][0]
    assert tput[1:] == ["47.9", "112.0", "3.20", "812.5", "48.5", "4.25"], tput  # 8 ok requests / 2.5 s = 3.20 req/s
    sweep = [ln.split() for ln in lg.summary_lines() if ln.startswith("  token_sweep") and "passed" not in ln][0]
    assert sweep[4] == "-" and sweep[6] == "-", "no prefill or peak memory in the case JSON: '-'"
    assert "    node1 (1 thread)" in text and "    node2 (1 thread)" in text
    assert "TTFT (ms)" in text and "decode (tok/s)" in text and "peak memory" in text
    rows = run_json(lg)["benchmarks"]
    assert [r["case"] for r in rows] == ["concurrency-c2", "token_sweep-pp128-tg32"]
    assert rows[0]["ttft_ms"]["mean"] == 214.2 and rows[0]["output_tps"] == 112.04 and rows[0]["request_tps"] == 3.2
    md = (lg.folder.path / "handoff.md").read_text()
    assert "| concurrency-c2 | passed | 8 | 0 | 214.2 | 210.1 | 293.5 |" in md
    assert run_json(lg)["result"]["status"] == "green"


def test_where_the_model_serves_and_when_it_stopped(tmp_path):
    lg = ledger(tmp_path)
    lg.serving_verdict("preflight", {"outcome": "GO (tight)", "source": "hub", "overridden": False, "seconds": 0.4,
                                     "items": {"format": {"status": "go", "line": "safetensors"},
                                               "memory": {"status": "warn", "line": "tight"}},
                                     "no_go": [], "warnings": ["tight"]})
    pass_all(lg, ORDER)
    lg.serving(serving_block("org/m", {"node1": "http://10.0.0.1:52415", "node2": "http://10.0.0.2:52415"},
                             {"node1": "abc"}, "inst-1", "Pipeline", "MlxRing"))
    lg.end(0)
    lines = lg.summary_lines()
    assert "will it serve: GO (tight) (from hub; format go, memory warn)" in lines  # preflight's verdict, one line
    assert "serving: org/m, instance inst-1 (Pipeline, MlxRing)" in lines
    assert "  node1  http://10.0.0.1:52415  (node id abc)" in lines and "  node2  http://10.0.0.2:52415" in lines
    curl = next(ln for ln in lines if ln.startswith("  try: curl -s http://10.0.0.1:52415/v1/chat/completions "))
    assert '"model": "org/m"' in curl
    md = (lg.folder.path / "handoff.md").read_text()
    assert "- **Serving:** `org/m` instance `inst-1` (Pipeline, MlxRing) at node1 http://10.0.0.1:52415" in md
    assert "- **Try it:** `curl -s" in md and run_json(lg)["serving"]["nodes"][1]["api_url"] == "http://10.0.0.2:52415"
    lg.serving_stopped("--teardown")
    assert "  stopped at the end of the run: --teardown" in lg.summary_lines()


GO = {"outcome": "GO", "source": "hub", "overridden": False, "seconds": 0.3,
      "items": {"format": {"status": "go", "line": "safetensors"}}, "no_go": [], "warnings": []}


def test_a_reused_preflight_pass_brings_its_serving_verdict(tmp_path):
    """A --resume-bootstrap run that reuses preflight still says whether the model will serve: the verdict kept with
    the pass, marked as the reused pass's own, in the summary, handoff.md and run.json (held to its schema)."""
    first = ledger(tmp_path / "a")
    first.serving_verdict("preflight", GO)
    kept = first.pass_summary("preflight")
    assert kept["serving_verdict"]["outcome"] == "GO" and "serving_verdict" not in first.pass_summary("chat")
    second = ledger(tmp_path / "b")
    second.gate_reused("preflight", time.time(), "run-a", kept)
    pass_all(second, ORDER[1:])
    second.end(0)
    line = next(ln for ln in second.summary_lines() if ln.startswith("will it serve: "))
    assert line.startswith("will it serve: GO (from hub; format go) — judged by the reused pass of "), line
    assert line.endswith("(run run-a)"), line
    assert "— judged by the reused pass of" in (second.folder.path / "handoff.md").read_text()
    assert "(run run-a)" in run_json(second)["serving_verdict"]["reused_from"]
    assert "reused_from" not in second.pass_summary("preflight")["serving_verdict"]  # kept as judged, not re-marked
    third = ledger(tmp_path / "c")
    third.gate_reused("preflight", time.time(), "old-run", {"notes": {}, "evidence": ""})  # a pass from before
    assert not any(ln.startswith("will it serve") for ln in third.summary_lines())


def test_next_command_stays_short_when_benchmarks_cannot_start_or_fail(tmp_path):
    lg = ledger(tmp_path / "a")
    lg.deselect(ORDER, bench_only=True)
    lg.bench_blocked("cannot fingerprint the cluster (NodeError: node1: cannot connect)", "preflight")
    for i in range(28):
        lg.bench_result(f"test_token_sweep[token_sweep-pp{i}-tg32]", "skipped", "benchmarks cannot start: …")
    assert lg.fields()["NEXT_COMMAND"] == "pytest gates/ --model org/m -k preflight"
    assert lg.fields()["KNOWN_BLOCKER"].startswith("benchmarks cannot start: cannot fingerprint the cluster")
    assert lg.exit_status(0) == EXIT_BLOCKED
    failed = ledger(tmp_path / "b")
    failed.deselect(ORDER, bench_only=True)
    for i in range(10):
        failed.bench_result(f"test_token_sweep[token_sweep-pp{i}-tg32]", "failed", "2/2 requests failed")
    failed.bench_result("test_concurrency[concurrency-c4]", "failed", "1/8 requests failed")
    assert failed.fields()["NEXT_COMMAND"] == ("pytest benchmarks/ --model org/m -k 'token_sweep or concurrency' "
                                               "--rerun-benchmarks")


def test_a_run_interrupted_mid_benchmark_keeps_the_summary_of_what_finished(tmp_path):
    lg = ledger(tmp_path)
    pass_all(lg, ORDER)
    lg.folder.write_json("bench/concurrency-c1.json", case_payload("concurrency-c1", "concurrency"))
    lg.bench_result("test_concurrency[concurrency-c1]", "passed", duration=2.0)
    lg.end(2, "KeyboardInterrupt (Ctrl-C) during test_concurrency[concurrency-c2]")
    doc = run_json(lg)
    assert doc["result"]["status"] == "interrupted" and doc["exit_status"] == 2
    assert [r["case"] for r in doc["benchmarks"]] == ["concurrency-c1"] and doc["benchmarks"][0]["requests"] == 8
    assert lg.summary_lines()[0].startswith("result: interrupted (exit 2): KeyboardInterrupt")
    assert "| concurrency-c1 | passed | 8 | 0 |" in (lg.folder.path / "handoff.md").read_text()

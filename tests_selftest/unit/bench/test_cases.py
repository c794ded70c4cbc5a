"""Load shapes and the case runner against the calibration server."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldrop.bench import cases
from modeldrop.bench.client import BENCH_PATH, CHAT_PATH, BenchClient, ChatRequest
from modeldrop.bench.load import run_rounds
from modeldrop.bench.prompts import PromptSizer
from modeldrop.bench.report import format_case
from modeldrop.bench.tasks import TASKS, grade, strip_thinking
from sandbox.calibration_server import CalibServer, prompt_tokens_of


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CalibServer]:
    answers = {t.prompt: t.example_answer for t in TASKS}
    answers[TASKS[2].prompt] = "Sure! Here it is: {city: Paris}"
    srv = CalibServer.start(answers=answers, answers_path=tmp_path_factory.mktemp("a") / "answers.json",
                            defaults={"ttft_ms": 10, "gap_ms": 5, "reasoning": 5})
    yield srv
    srv.stop()


def test_full_profile_shapes() -> None:
    full = cases.PROFILES["full"]
    sweep = cases.cases_for("token_sweep", full)
    pps = sorted({c.params["prompt_tokens"] for c in sweep})
    assert pps[0] == 128 and pps[-1] == 4096 and len([p for p in pps if 512 <= p <= 1024]) >= 5
    assert {c.params["max_tokens"] for c in sweep} == {128, 512} and len(sweep) == len(pps) * 2
    assert [c.case_id for c in cases.cases_for("concurrency", full)] == [f"concurrency-c{c}" for c in (1, 2, 4, 8)]
    assert [c.case_id for c in cases.cases_for("thinking", full)] == ["thinking-on", "thinking-off"]
    assert len(cases.cases_for("tasks", full)) == len(TASKS)
    assert cases.PROFILES["short"].replace(concurrency=(3,), sweep_repeat=None).concurrency == (3,)
    with pytest.raises(ValueError):
        cases.cases_for("nope", full)


def test_task_checks() -> None:
    for t in TASKS:
        assert grade(t, t.example_answer)[0], t.name
        assert not grade(t, "I cannot help with that.")[0], t.name
    assert strip_thinking("<think>hmm 17*23</think>\n391") == "391"
    assert grade(TASKS[1], "<think>17*23=391</think>The answer is 390")[0] is False


def test_barrier_releases_each_round_together(server: CalibServer) -> None:
    client = BenchClient(server.url, server.model)
    server.reset_log()

    def make(r: int, i: int) -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=4 if r >= 0 else 1,
                           extra_body={"calib": {"ttft_ms": 5, "gap_ms": 30 * (i + 1) if r >= 0 else 1}})

    recs = run_rounds(client, make, concurrency=4, rounds=2, warmup=1)
    assert len(recs) == 8 and all(r.ok for r in recs)
    assert sorted(r.tag for r in recs) == sorted(f"r{r}.t{i}" for r in range(2) for i in range(4))
    first_round = [r for r in recs if r.tag.startswith("r0.")]
    second_round = [r for r in recs if r.tag.startswith("r1.")]
    # round 1 starts only after the slowest request of round 0 has finished
    assert min(r.t_send for r in second_round) >= max(r.t_send + r.t_end for r in first_round) - 0.005
    log = server.log()
    assert sum(1 for e in log if e["n"] == 1) == 4  # warmups: one per thread, not returned


def test_short_profile_all_phases_then_reuse(server: CalibServer, tmp_path: Path) -> None:
    client = BenchClient(server.url, server.model)
    reports = tmp_path / "reports"
    run = reports / "20260101T000000Z-calib--model"
    ctx = cases.BenchContext(client=client, model_id=server.model, fingerprint="fp", run_dir=run,
                             profile=cases.PROFILES["short"], sizer=cases.make_sizer(client, None),
                             endpoint=cases.resolve_endpoint(client), reports_dir=reports,
                             reference={"aggregate_tps": {"4": 100.0}}, sink=None)
    assert ctx.endpoint == BENCH_PATH
    t0 = time.perf_counter()
    out = {c.case_id: cases.run_case(c, ctx) for ph in cases.PHASES for c in cases.cases_for(ph, ctx.profile)}
    assert time.perf_counter() - t0 < 120
    assert all(not o.reused and o.payload["summary"]["errors"] == 0 for o in out.values())
    assert {p.name for p in (run / "bench").iterdir()} == {f"{k}.json" for k in out}

    sweep = out["token_sweep-pp512-tg32"].payload
    assert sweep["endpoint"] == BENCH_PATH and len(sweep["requests"]) == 2 and len(sweep["warmup_requests"]) == 1
    for case in ("token_sweep-pp128-tg32", "token_sweep-pp512-tg32", "concurrency-c4"):
        p = out[case].payload
        target = p["config"]["params"]["prompt_tokens"]
        prompt = p["summary"]["prompt"]  # every request exactly as asked, by the server's own count
        assert prompt["server_tokens"] == [target] * p["summary"]["requests"] and prompt["exact"], case
        assert prompt["method"] == "usage-calibrated" and p["warnings"] == []
        assert [r["prompt_tokens"] for r in p["requests"]] == [r["prompt_target"] for r in p["requests"]]
        # warm-ups have the measured shape: the asked prompt length and output tokens
        assert p["warmup_requests"] and all(w["prompt_tokens"] == target and w["completion_tokens"] == 32
                                            for w in p["warmup_requests"]), case
    assert len(out["concurrency-c4"].payload["warmup_requests"]) == 4  # one per thread
    # decode tok/s as measured: the median request's, each (n - 1) over its first to last chunk stamp, every
    # stamp no earlier than the server's write of that chunk (what it is beyond that is load: not asserted)
    reqs = sweep["requests"]
    assert sweep["summary"]["decode_tps"]["p50"] == pytest.approx(statistics.median(r["decode_tps"] for r in reqs))
    for r in reqs:
        stamps, sent = r["chunk_times"], server.entry(r["response_id"])["t_sent"]
        assert r["decode_tps"] == pytest.approx((r["completion_tokens"] - 1) / (stamps[-1] - stamps[0]))
        assert len(stamps) == len(sent) == 32 and all(r["t_send"] + t >= w for t, w in zip(stamps, sent, strict=True))
    # EXO's own figures beside ours: generation_tps, prompt_tps, peak memory (the calibration server's are exact)
    s = sweep["summary"]
    assert s["server_generation_tps"]["p50"] == pytest.approx(200.0, rel=0.001)
    assert s["server_prompt_tps"]["p50"] == pytest.approx(512 / 0.010, rel=0.001) and s["server_prompt_tps"]["n"] == 2
    assert s["peak_memory_gb"] == pytest.approx(123456789 / 2**30)
    assert sweep["figures"]["server_prompt_tps"] == s["server_prompt_tps"]["p50"]

    conc = out["concurrency-c4"].payload
    assert conc["summary"]["requests"] == 8 and conc["figure_keys"] == ["4"]
    assert conc["reference"][0]["metric"] == "aggregate_tps"
    assert conc["figures"]["aggregate_tps"] == conc["summary"]["aggregate_output_tps"]
    assert conc["summary"]["exo_style_agg_tps"] > conc["summary"]["aggregate_output_tps"]

    on, off = out["thinking-on"].payload, out["thinking-off"].payload
    assert on["endpoint"] == CHAT_PATH
    assert on["figures"]["reasoning_tokens"] == 5 and off["figures"]["reasoning_tokens"] == 0
    # TTFC is the first content chunk's stamp, after the 5 reasoning chunks (the same read at most, on a busy host)
    assert all(r["ttfc"] == r["chunk_times"][5] and r["ttft"] == r["chunk_times"][0] for r in on["requests"])
    assert on["figures"]["ttfc_s"] >= on["figures"]["ttft_s"]

    json_task = out["tasks-json_shape"].payload["summary"]
    assert json_task["pass_rate"] == 0 and "{city: Paris}" in json_task["failures"][0]["answer"]
    assert out["tasks-arithmetic"].payload["summary"]["pass_rate"] == 1

    again = cases.run_case(cases.cases_for("concurrency", ctx.profile)[0], ctx)
    assert again.reused and again.path == run / "bench" / "concurrency-c1.json"
    ctx.rerun = True
    assert not cases.run_case(cases.cases_for("concurrency", ctx.profile)[0], ctx).reused


def test_a_case_whose_prompts_drift_says_so(server: CalibServer, tmp_path: Path) -> None:
    """A local tokenizer that counts one token fewer than the server (a wrong --bench-tokenizer): the sizer
    believes every prompt exact, the server's counts say otherwise, and the case says so."""
    client = BenchClient(server.url, server.model)
    sizer = PromptSizer(counter=lambda messages: prompt_tokens_of(messages) - 1)
    ctx = cases.BenchContext(client=client, model_id=server.model, fingerprint="fp", run_dir=tmp_path / "run",
                             profile=cases.PROFILES["short"], sizer=sizer, endpoint=BENCH_PATH, sink=None)
    case = cases.BenchCase("token_sweep", "token_sweep-pp128-tg4", {"prompt_tokens": 128, "max_tokens": 4,
                                                                    "repeat": 3})
    payload = cases.run_case(case, ctx).payload
    prompt = payload["summary"]["prompt"]
    assert prompt["predicted_tokens"] == [128] * 3 and prompt["server_tokens"] == [129] * 3
    assert not prompt["exact"] and prompt["off_target"] == 3
    assert payload["warnings"] == ["prompt length drift: 3 of 3 requests were counted 129 tokens x3 by the server "
                                   "(usage.prompt_tokens), not the 128 asked (sized by tokenizer)"]
    text = format_case(payload)
    assert text.splitlines()[1].startswith("WARNING: prompt length drift: 3 of 3 requests")  # under the name
    assert "asked 128, server counted 129 x3" in text and "NOT exact" in text
def test_concurrency_goes_through_every_nodes_api(server: CalibServer, tmp_path: Path) -> None:
    """With several nodes, thread i of a concurrency case sends through node (i mod N)'s API: both servers see
    the load, and the case JSON and its report hold each node's figures."""
    other = CalibServer.start(answers={}, answers_path=tmp_path / "answers2.json",
                              defaults={"ttft_ms": 10, "gap_ms": 5, "reasoning": 5})
    try:
        one, two = BenchClient(server.url, server.model), BenchClient(other.url, server.model)
        ctx = cases.BenchContext(client=one, model_id=server.model, fingerprint="fp", run_dir=tmp_path / "run",
                                 profile=cases.PROFILES["short"], sizer=cases.make_sizer(one, None),
                                 endpoint=CHAT_PATH, reports_dir=tmp_path, sink=None, node_clients={1: one, 2: two})
        server.reset_log()
        other.reset_log()
        case = next(c for c in cases.cases_for("concurrency", ctx.profile) if c.params["concurrency"] == 4)
        out = cases.run_case(case, ctx).payload
        rounds = case.params["rounds"]
        per = out["summary"]["per_node"]
        assert set(per) == {"node1", "node2"} and out["config"]["nodes"] == 2, per
        assert all(p["threads"] == 2 and p["requests"] == 2 * rounds and p["errors"] == 0 for p in per.values()), per
        # node2's API served its two threads' requests, each thread's warm-ups (of the measured shape) included
        assert len(other.log()) == 2 * (rounds + ctx.profile.warmup), other.log()
        text = format_case(out)
        assert "node1: 2 thread(s)" in text and "node2: 2 thread(s)" in text, text
    finally:
        other.stop()

"""Load shapes (token_sweep, thinking, concurrency, tasks), profiles, and the case runner.

Contract
--------
- `PROFILES["full" | "short"]` are `BenchProfile`s; `profile.replace(**overrides)` tunes one.
  "short" runs in well under 2 minutes against a CPU tiny model (sandbox / `--bench-profile short`).
- `cases_for(phase, profile) -> list[BenchCase]`; a case id is stable for the same parameters
  (`token_sweep-pp512-tg128`, `thinking-on`, `concurrency-c4`, `tasks-arithmetic`).
- `run_case(case, ctx) -> CaseOutcome` measures one case, or reuses a checkpoint with the same
  fingerprint and config (current run folder, then earlier runs of the model) unless
  `ctx.rerun`; it writes `<run_dir>/bench/<case_id>.json` atomically when the case ends, with
  fingerprint, config, raw per-request records (warmups apart), summary, figures, reference
  ratios and regression against the previous measured run. It raises only on programming
  errors; request failures are counted in the summary.
Sweep and concurrency go to `ctx.endpoint` (`/bench/chat/completions` when EXO has it: fixed
output length, no prefix cache); thinking and tasks always use `/v1/chat/completions` (they need
EOS and reasoning parsing). Every sized prompt is built for its own salt with exactly the asked token
count (modeldrop.bench.prompts); the case records the server's count of every request and, when any
request drifted from the asked length, says so in `warnings` (and its text). Warm-ups have the measured
shape (prompt length and output tokens; tasks, which are not timed, keep a short one).
With several nodes (`ctx.node_clients`) the concurrency threads go through every node's API in
turn (thread i to the (i mod N)-th node), and the case JSON holds each node's figures under `summary.per_node`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modeldrop.bench import checkpoints, reference
from modeldrop.bench.client import BENCH_PATH, CHAT_PATH, BenchClient, ChatRequest, RequestRecord
from modeldrop.bench.heartbeat import Heartbeat, Sink, stderr_sink
from modeldrop.bench.load import run_rounds
from modeldrop.bench.prompts import BuiltPrompt, PromptSizer, salt_text
from modeldrop.bench.stats import dist, summarize
from modeldrop.bench.tasks import TASKS, grade, task_by_name

PHASES = ("token_sweep", "thinking", "concurrency", "tasks")
SIZED_PHASES = ("token_sweep", "concurrency")
# v2: exact prompt length per request (word salts), warm-ups of the measured shape; checkpoints before it are
# not reused (their config has no "prompt_sizing").
PROMPT_SIZING = 2
THINK_PROMPT = ("A farmer has 17 sheep. All but 9 run away, then he buys twice as many as he has left. "
                "How many sheep does he have now? Think it through, then give the number.")


@dataclass(frozen=True)
class BenchProfile:
    name: str
    prompt_lens: tuple[int, ...] = (128, 256, 512, 640, 768, 896, 1024, 2048, 4096)
    output_lens: tuple[int, ...] = (128, 512)
    sweep_repeat: int = 3
    thinking_max_tokens: int = 2048
    thinking_repeat: int = 3
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    concurrency_rounds: int = 3
    concurrency_prompt_tokens: int = 512
    concurrency_max_tokens: int = 256
    task_repeat: int = 1
    task_max_tokens: int = 256
    task_thinking: bool | None = False
    warmup: int = 1
    warmup_max_tokens: int = 8
    request_timeout_s: float = 900.0

    def replace(self, **overrides: Any) -> BenchProfile:
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


PROFILES: dict[str, BenchProfile] = {
    "full": BenchProfile("full"),
    "short": BenchProfile("short", prompt_lens=(128, 512), output_lens=(32,), sweep_repeat=2,
                          thinking_max_tokens=64, thinking_repeat=1, concurrency=(1, 2, 4),
                          concurrency_rounds=2, concurrency_prompt_tokens=128, concurrency_max_tokens=32,
                          task_max_tokens=48, warmup_max_tokens=4, request_timeout_s=120.0),
}


@dataclass
class BenchCase:
    phase: str
    case_id: str
    params: dict[str, Any]


def cases_for(phase: str, p: BenchProfile) -> list[BenchCase]:
    """The cases of one phase under profile `p`; see module contract."""
    if phase == "token_sweep":
        return [BenchCase(phase, f"token_sweep-pp{pp}-tg{tg}",
                          {"prompt_tokens": pp, "max_tokens": tg, "repeat": p.sweep_repeat})
                for tg in p.output_lens for pp in p.prompt_lens]
    if phase == "thinking":
        return [BenchCase(phase, f"thinking-{mode}",
                          {"thinking": mode == "on", "max_tokens": p.thinking_max_tokens, "repeat": p.thinking_repeat})
                for mode in ("on", "off")]
    if phase == "concurrency":
        return [BenchCase(phase, f"concurrency-c{c}",
                          {"concurrency": c, "rounds": p.concurrency_rounds,
                           "prompt_tokens": p.concurrency_prompt_tokens,
                           "max_tokens": p.concurrency_max_tokens}) for c in p.concurrency]
    if phase == "tasks":
        return [BenchCase(phase, f"tasks-{t.name}",
                          {"task": t.name, "repeat": p.task_repeat, "max_tokens": p.task_max_tokens,
                           "thinking": p.task_thinking}) for t in TASKS]
    raise ValueError(f"unknown benchmark phase {phase!r}; known: {', '.join(PHASES)}")


@dataclass
class BenchContext:
    """What a case needs to run: target, identity, where to write, how to report progress."""

    client: BenchClient
    model_id: str
    fingerprint: str
    run_dir: Path
    profile: BenchProfile
    sizer: PromptSizer
    endpoint: str = CHAT_PATH
    reports_dir: Path | None = None
    reference: dict[str, Any] | None = None
    rerun: bool = False
    serving: str = ""  # why the target counts as serving (the chat pass, or --exo-api's serving check)
    sink: Sink | None = stderr_sink
    heartbeat_every_n: int = 5
    heartbeat_every_s: float = 15.0
    salt: int = field(default_factory=lambda: int(time.time()) % 1_000_000)
    _salt_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_salts(self, n: int) -> int:
        """The first of `n` salts no other request of this context uses."""
        with self._salt_lock:
            first, self.salt = self.salt, self.salt + n
        return first
    node_clients: dict[int, BenchClient] = field(default_factory=dict)  # every node's API (concurrency spreads)


@dataclass
class CaseOutcome:
    payload: dict[str, Any]
    path: Path
    reused: bool
    reused_from: str | None = None
    plots: list[Path] = field(default_factory=list)  # filled by the pytest layer after redrawing


def resolve_endpoint(client: BenchClient, choice: str = "auto") -> str:
    """"v1" / "bench" as asked; "auto" probes /bench/chat/completions (1 token) and falls back."""
    if choice == "v1":
        return CHAT_PATH
    if choice == "bench":
        return BENCH_PATH
    rec = client.send(ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=1,
                                  stream=False, endpoint=BENCH_PATH, tag="probe"))
    client.close()
    return BENCH_PATH if rec.ok else CHAT_PATH


def usage_probe(client: BenchClient, endpoint: str = CHAT_PATH):  # noqa: ANN201
    """A PromptSizer probe: send `messages` with max_tokens=1, return usage.prompt_tokens."""
    def probe(messages: list[dict[str, Any]]) -> int | None:
        rec = client.send(ChatRequest(messages=messages, max_tokens=1, stream=False, endpoint=endpoint,
                                      tag="prompt-probe"))
        return rec.prompt_tokens if rec.ok else None
    return probe


def make_sizer(client: BenchClient, tokenizer_dir: Path | None) -> PromptSizer:
    """Tokenizer-based when `tokenizer_dir` holds tokenizer.json, else calibrated by usage."""
    return PromptSizer(tokenizer_dir=tokenizer_dir, probe=usage_probe(client))


def case_config(case: BenchCase, ctx: BenchContext) -> dict[str, Any]:
    """Everything that makes two measurements of a case comparable (hashed into config_key)."""
    sized = case.phase in SIZED_PHASES
    endpoint = ctx.endpoint if sized else CHAT_PATH
    warm = {"max_tokens": ctx.profile.warmup_max_tokens} if case.phase == "tasks" else "measured shape"
    cfg = {"phase": case.phase, "params": case.params, "endpoint": endpoint, "warmup": ctx.profile.warmup,
           "warmup_shape": warm, "model_id": ctx.model_id,
           "prompt_method": ctx.sizer.ensure_calibrated() if sized else "fixed",
           "prompt_sizing": PROMPT_SIZING if sized else None}
    if case.phase == "concurrency" and len(ctx.node_clients) > 1:
        cfg["nodes"] = len(ctx.node_clients)  # spread over every node's API: not comparable with one node's
    return cfg


def run_case(case: BenchCase, ctx: BenchContext) -> CaseOutcome:
    """Measure or reuse one case; see module contract."""
    cfg = case_config(case, ctx)
    key = checkpoints.config_key(cfg)
    if not ctx.rerun:
        found = checkpoints.find_done(case.case_id, ctx.fingerprint, key, ctx.run_dir, ctx.reports_dir, ctx.model_id)
        if found is not None:
            return _reuse(case, ctx, *found)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    measure = {"token_sweep": _sweep, "thinking": _thinking, "concurrency": _concurrency, "tasks": _tasks}[case.phase]
    warm, recs, extra, figures, keys = measure(case, ctx, cfg)
    summary = summarize(recs, concurrency=case.params.get("concurrency", 1)) | extra
    warnings = prompt_warnings(summary.get("prompt"))
    prev = checkpoints.previous_measurement(case.case_id, ctx.model_id, ctx.reports_dir, ctx.run_dir)
    payload = {
        "case_id": case.case_id, "phase": case.phase, "model_id": ctx.model_id, "fingerprint": ctx.fingerprint,
        "config": cfg, "config_key": key, "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(), "duration_s": time.perf_counter() - t0,
        "endpoint": cfg["endpoint"], "base_url": ctx.client.base_url, "serving": ctx.serving,
        "warmup_requests": [r.to_dict() for r in warm], "requests": [r.to_dict() for r in recs],
        "summary": summary, "warnings": warnings, "figures": figures, "figure_keys": keys,
        "reference": reference.compare_reference(figures, keys, ctx.reference),
        "regression": reference.regression(figures, prev[1].get("figures") if prev else None,
                                           str(prev[0].parent.parent.name) if prev else None),
        "reused_from": None,
    }
    path = checkpoints.write_case(ctx.run_dir, payload)
    return CaseOutcome(payload, path, reused=False)


def _reuse(case: BenchCase, ctx: BenchContext, path: Path, payload: dict[str, Any]) -> CaseOutcome:
    """A checkpoint of the same fingerprint and config: copy it into this run folder (once)."""
    if ctx.sink is not None:
        ctx.sink(f"bench {case.phase} {case.case_id} reused checkpoint {path} (same fingerprint and config)")
    here = checkpoints.case_path(ctx.run_dir, case.case_id)
    if path.resolve() == here.resolve():
        return CaseOutcome(payload, path, reused=True, reused_from=payload.get("reused_from") or str(path))
    copied = dict(payload, reused_from=str(path))
    copied.pop("schema", None)
    out = checkpoints.write_case(ctx.run_dir, copied)
    return CaseOutcome(copied, out, reused=True, reused_from=str(path))


# ---- measurement per phase -------------------------------------------------------------------
Measured = tuple[list[RequestRecord], list[RequestRecord], dict[str, Any], dict[str, float | None], list[str]]


def _short_warmup(ctx: BenchContext) -> ChatRequest:
    """The tasks' warm-up (tasks are not timed): a short chat that opens the connection."""
    return ChatRequest(messages=[{"role": "user", "content": "Warm up: say hi."}],
                       max_tokens=ctx.profile.warmup_max_tokens, endpoint=CHAT_PATH, tag="warmup")


def _heartbeat(case: BenchCase, ctx: BenchContext, total: int) -> Heartbeat:
    return Heartbeat(case.phase, case.case_id, total, sink=ctx.sink, every_n=ctx.heartbeat_every_n,
                     every_s=ctx.heartbeat_every_s)


def _sequential(case: BenchCase, ctx: BenchContext, make: Any, n: int, make_warm: Any,
                seen: Any = None) -> tuple[list, list]:
    """Warm-ups then `n` measured requests, one at a time; `seen(record)` after each (warm-ups included)."""
    warm, recs = [], []
    for w in range(ctx.profile.warmup):
        warm.append(ctx.client.send(make_warm(w)))
        if seen is not None:
            seen(warm[-1])
    with _heartbeat(case, ctx, n) as hb:
        for i in range(n):
            rec = ctx.client.send(make(i))
            recs.append(rec)
            if seen is not None:
                seen(rec)
            hb.tick(rec.completion_tokens or 0)
    return warm, recs


class SizedRequests:
    """The sized requests of one case: each built for its own salt with `target` prompt tokens; `seen(record)`
    gives the server's count back to the sizer (which corrects the next request when it sized by usage)."""

    def __init__(self, ctx: BenchContext, target: int, max_tokens: int, endpoint: str):
        self.ctx, self.target, self.max_tokens, self.endpoint = ctx, target, max_tokens, endpoint
        self._built: dict[str, BuiltPrompt] = {}

    def request(self, salt: int, tag: str) -> ChatRequest:
        built = self.ctx.sizer.build(self.target, salt=salt)
        self._built[tag] = built
        return ChatRequest(messages=built.messages, max_tokens=self.max_tokens, endpoint=self.endpoint, tag=tag,
                           prompt_target=self.target, prompt_predicted=built.predicted_tokens)

    def seen(self, rec: RequestRecord) -> None:
        built = self._built.get(rec.tag)
        if built is not None and rec.ok:
            self.ctx.sizer.observe(built, rec.prompt_tokens)


def _prompt_info(ctx: BenchContext, target: int, recs: list[RequestRecord]) -> dict[str, Any]:
    """The prompt block of a sized case: asked, the sizer's and the server's count of every request."""
    ok = [r for r in recs if r.ok]
    server = [r.prompt_tokens for r in ok]
    achieved = dist(server)
    off = [r.prompt_tokens for r in ok if r.prompt_off_target]
    return {"prompt": {"target_tokens": target, "method": ctx.sizer.method,
                       "server_tokens": server, "predicted_tokens": [r.prompt_predicted for r in ok],
                       "off_target": len(off), "off_target_counts": dict(Counter(off)),
                       "uncounted": sum(1 for n in server if n is None),
                       "exact": bool(ok) and not off and None not in server,
                       "achieved_tokens_p50": achieved["p50"], "achieved_n": achieved["n"],
                       "sizer": ctx.sizer.describe()}}


def prompt_warnings(prompt: dict[str, Any] | None) -> list[str]:
    """One line per way a sized case's prompts differ from the asked length (empty when every one is exact)."""
    if not prompt:
        return []
    n, out = len(prompt["server_tokens"]), []
    if prompt["off_target"]:
        counts = ", ".join(f"{k} tokens x{v}" for k, v in sorted(prompt["off_target_counts"].items()))
        out.append(f"prompt length drift: {prompt['off_target']} of {n} requests were counted {counts} by the server "
                   f"(usage.prompt_tokens), not the {prompt['target_tokens']} asked (sized by {prompt['method']})")
    if prompt["uncounted"]:
        out.append(f"prompt length unverified: {prompt['uncounted']} of {n} requests came back without the "
                   "server's prompt token count")
    return out


def _sweep(case: BenchCase, ctx: BenchContext, cfg: dict[str, Any]) -> Measured:
    pp, tg, n = case.params["prompt_tokens"], case.params["max_tokens"], case.params["repeat"]
    sized = SizedRequests(ctx, pp, tg, cfg["endpoint"])
    salt = ctx.take_salts(n + ctx.profile.warmup)
    warm, recs = _sequential(case, ctx, lambda i: sized.request(salt + i, f"rep{i}"), n,
                             lambda w: sized.request(salt + n + w, f"warmup{w}"), seen=sized.seen)
    s = summarize(recs)
    figures = {"decode_tps": s["decode_tps"]["p50"], "ttft_s": s["ttft_s"]["p50"], "e2e_s": s["e2e_s"]["p50"],
               "server_generation_tps": s["server_generation_tps"]["p50"],
               "server_prompt_tps": s["server_prompt_tps"]["p50"]}
    return warm, recs, _prompt_info(ctx, pp, recs), figures, [f"{pp}x{tg}", str(pp)]


def _thinking(case: BenchCase, ctx: BenchContext, cfg: dict[str, Any]) -> Measured:
    on, n = case.params["thinking"], case.params["repeat"]
    salt = ctx.take_salts(n + ctx.profile.warmup)

    def make(i: int, tag: str = "") -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": f"[ {salt_text(salt + i)} ] {THINK_PROMPT}"}],
                           max_tokens=case.params["max_tokens"], enable_thinking=on,
                           reasoning_effort=None if on else "none", tag=tag or f"rep{i}")

    warm, recs = _sequential(case, ctx, make, n, lambda w: make(n + w, f"warmup{w}"))
    s = summarize(recs)
    no_answer = sum(1 for r in recs if r.ok and r.ttfc is None)
    extra = {"reasoning_chunks": dist(r.reasoning_chunks for r in recs if r.ok),
             "requests_without_content": no_answer,
             "note": "reasoning tokens: server count when non-zero, else n x reasoning chunks / token chunks"}
    mode = "on" if on else "off"
    figures = {"ttfc_s": s["ttfc_s"]["p50"], "ttft_s": s["ttft_s"]["p50"], "e2e_s": s["e2e_s"]["p50"],
               "reasoning_tokens": s["reasoning_tokens_est"]["p50"]}
    return warm, recs, extra, figures, [mode]


def load_targets(ctx: BenchContext) -> list[tuple[int | None, BenchClient]]:
    """(node, client) per load thread slot: every node's API in node order, else the one client."""
    if len(ctx.node_clients) > 1:
        return [(k, ctx.node_clients[k]) for k in sorted(ctx.node_clients)]
    return [(None, ctx.client)]


def per_node(recs: list[RequestRecord], nodes: list[int | None], c: int) -> dict[str, Any]:
    """Each node's figures, from the records of the threads that went through its API (thread i: nodes[i % N])."""
    if len(nodes) < 2:
        return {}
    out: dict[str, Any] = {}
    for j, k in enumerate(nodes):
        mine = [r for r in recs if int(r.tag.split(".t")[1]) % len(nodes) == j]
        threads = len(range(j, c, len(nodes)))
        if not mine:
            continue
        s = summarize(mine, concurrency=threads)
        out[f"node{k}"] = {"threads": threads, "requests": s["requests"], "errors": s["errors"],
                           "p50_latency_s": s["e2e_s"]["p50"], "p50_ttft_s": s["ttft_s"]["p50"],
                           "decode_tps": s["decode_tps"]["p50"], "output_tokens": s["output_tokens_total"],
                           "aggregate_tps": s["aggregate_output_tps"]}
    return out


def _concurrency(case: BenchCase, ctx: BenchContext, cfg: dict[str, Any]) -> Measured:
    c, rounds = case.params["concurrency"], case.params["rounds"]
    pp, tg = case.params["prompt_tokens"], case.params["max_tokens"]
    sized = SizedRequests(ctx, pp, tg, cfg["endpoint"])
    salt = ctx.take_salts(c * (rounds + ctx.profile.warmup))

    def build(r: int, i: int) -> ChatRequest:  # warm-ups are rounds -1, -2, …
        tag = f"r{r}.t{i}" if r >= 0 else f"warmup{-1 - r}.t{i}"
        return sized.request(salt + c * (r + ctx.profile.warmup) + i, tag)

    # with a local tokenizer every prompt is counted now (counting after the barrier would stagger the threads);
    # sized by usage, each round's prompts follow the server's counts of the rounds before
    built = {(r, i): build(r, i) for r in range(-ctx.profile.warmup, rounds) for i in range(c)} \
        if ctx.sizer.local else {}
    targets = load_targets(ctx)

    def make(r: int, i: int) -> ChatRequest:
        return built.get((r, i)) or build(r, i)

    warm: list[RequestRecord] = []

    def warmed(rec: RequestRecord) -> None:
        warm.append(rec)
        sized.seen(rec)

    def measured(rec: RequestRecord) -> None:
        sized.seen(rec)
        hb.tick(rec.completion_tokens or 0)

    with _heartbeat(case, ctx, c * rounds) as hb:
        recs = run_rounds([cl for _, cl in targets], make, c, rounds, warmup=ctx.profile.warmup, on_record=measured,
                          on_warmup=warmed)
    per_round = []
    for r in range(rounds):
        group = [x for x in recs if x.tag.startswith(f"r{r}.")]
        per_round.append(summarize(group, concurrency=c)["aggregate_output_tps"])
    s = summarize(recs, concurrency=c)
    extra = _prompt_info(ctx, pp, recs) | {"aggregate_output_tps_per_round": dist(per_round),
                                                   "concurrency": c, "rounds": rounds}
    nodes = per_node(recs, [k for k, _ in targets], c)
    if nodes:
        extra["per_node"] = nodes
        extra["node_urls"] = {f"node{k}": cl.base_url for k, cl in targets}
    figures = {"p50_latency_s": s["e2e_s"]["p50"], "p95_latency_s": s["e2e_s"]["p95"],
               "p99_latency_s": s["e2e_s"]["p99"], "p50_ttft_s": s["ttft_s"]["p50"], "p95_ttft_s": s["ttft_s"]["p95"],
               "decode_tps": s["decode_tps"]["p50"], "aggregate_tps": s["aggregate_output_tps"],
               "error_rate": s["errors"] / s["requests"] if s["requests"] else None}
    return warm, recs, extra, figures, [str(c)]


def _tasks(case: BenchCase, ctx: BenchContext, cfg: dict[str, Any]) -> Measured:
    task = task_by_name(case.params["task"])
    n = case.params["repeat"]

    def make(i: int) -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": task.prompt}], max_tokens=case.params["max_tokens"],
                           enable_thinking=case.params["thinking"], tag=f"rep{i}")

    warm, recs = _sequential(case, ctx, make, n, lambda w: _short_warmup(ctx))
    graded = [(r, *grade(task, r.text)) if r.ok else (r, False, f"request failed: {r.error}") for r in recs]
    failures = [{"attempt": r.tag, "answer": r.text[:300], "reasoning_chars": len(r.reasoning_text), "why": why}
                for r, ok, why in graded if not ok]
    passed = sum(1 for _, ok, _ in graded if ok)
    extra = {"task": task.name, "task_prompt": task.prompt, "passed": passed, "attempts": len(graded),
             "pass_rate": passed / len(graded) if graded else None, "failures": failures}
    return warm, recs, extra, {"pass_rate": extra["pass_rate"]}, [task.name]

"""Human-readable text of a benchmark case payload, for the ledger (pytest-html text extra).

Contract: `format_case(payload) -> str`, a short multi-line summary: the case's warnings first (a prompt
length that drifted from the asked one), every percentile with its n, the prompt length asked beside the
server's count, the decode tok/s of the client beside the server's generation_tps (and their ratio), EXO's
prompt_tps and peak memory,
the measured aggregate beside exo's max x N estimate (labelled), reference ratios, regression,
task failures quoted, and where the checkpoint came from.
"""

from __future__ import annotations

from typing import Any

from modeldrop.bench.reference import fmt_rows
from modeldrop.bench.stats import fmt_dist


def _num(v: Any, fmt: str = ".1f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _counts(values: list[int | None]) -> str:
    """`128 x20` or `128 x17, 129 x3` (None as `none`)."""
    seen: dict[str, int] = {}
    for v in values:
        seen[str(v) if v is not None else "none"] = seen.get(str(v) if v is not None else "none", 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in seen.items()) or "none"


def format_case(payload: dict[str, Any], path: str | None = None) -> str:
    s = payload["summary"]
    src = f"reused from {payload['reused_from']}" if payload.get("reused_from") else "measured in this run"
    lines = [f"{payload['case_id']} ({payload['phase']}): {src}",
             f"model {payload['model_id']} via {payload.get('base_url', '?')}{payload.get('endpoint', '')}, "
             f"fingerprint {str(payload.get('fingerprint'))[:16]}",
             f"requests {s['requests']}: ok {s['ok']}, errors {s['errors']} {s['error_kinds'] or ''}".rstrip()]
    if payload.get("serving"):
        lines.append(f"serving: {payload['serving']}")
    lines[1:1] = [f"WARNING: {w}" for w in payload.get("warnings") or []]  # right under the case's name
    for e in s.get("error_samples") or []:
        lines.append(f"  error: {e}")
    prompt = s.get("prompt")
    if prompt:
        counted = prompt.get("server_tokens")
        exact = "exact" if prompt.get("exact") else "NOT exact"
        lines.append(f"prompt tokens: asked {prompt['target_tokens']}, server counted "
                     f"{_counts(counted) if counted is not None else prompt['achieved_tokens_p50']} "
                     f"(usage.prompt_tokens, n={prompt['achieved_n']}; {exact}), sized by {prompt['method']}")
    lines += [f"TTFT  {fmt_dist(s['ttft_s'], 'ms', 1000)}",
              f"TTFC  {fmt_dist(s['ttfc_s'], 'ms', 1000)}  (first content token)",
              f"TPOT  {fmt_dist(s['tpot_s'], 'ms', 1000, 2)}",
              f"ITL   {fmt_dist(s['itl_s'], 'ms', 1000, 2)}  ({s['itl_note']})",
              f"E2E   {fmt_dist(s['e2e_s'], 's', 1, 3)}",
              f"decode tok/s per request {fmt_dist(s['decode_tps'], '')}",
              f"server generation_tps    {fmt_dist(s['server_generation_tps'], '')}",
              f"ours / server ratio      {fmt_dist(s['decode_over_server_ratio'], '', 1, 3)}",
              f"server prompt_tps        {fmt_dist(s.get('server_prompt_tps') or {}, '')}  (EXO's prefill tok/s)",
              f"server peak memory       {_num(s.get('peak_memory_gb'), '.2f')} GB  (EXO's peak_memory_usage, max)",
              f"aggregate output tok/s {_num(s['aggregate_output_tps'])} (output tokens {s['output_tokens_total']} / "
              f"phase wall {_num(s['phase_wall_s'], '.2f')} s); exo-style max x N {_num(s['exo_style_agg_tps'])} "
              "(estimate, for comparison only)",
              f"tokens per SSE chunk {_num(s['tokens_per_chunk'], '.2f')}; client CPU "
              f"{_num(s['client_cpu_us_per_token'])} us/token"]
    for node, f in (s.get("per_node") or {}).items():
        lines.append(f"{node}: {f['threads']} thread(s), {f['requests']} requests ({f['errors']} errors), "
                     f"E2E p50 {_num(f['p50_latency_s'], '.3f')} s, TTFT p50 {_num(f['p50_ttft_s'], '.3f')} s, "
                     f"decode tok/s p50 {_num(f['decode_tps'])}, aggregate output tok/s {_num(f['aggregate_tps'])}")
    if s.get("reasoning_chunks"):
        lines.append(f"reasoning tokens (est.) {fmt_dist(s['reasoning_tokens_est'], '', 1, 0)}; "
                     f"requests without any content: {s.get('requests_without_content', 0)}")
    if "pass_rate" in s:
        lines.append(f"task {s['task']}: passed {s['passed']}/{s['attempts']} "
                     f"(pass rate {_num(s['pass_rate'], '.2f')})")
        for f in s.get("failures") or []:
            lines.append(f"  FAIL {f['attempt']}: {f['why']}\n    answer: {f['answer']!r}")
    ref = fmt_rows(payload.get("reference") or [])
    reg = fmt_rows(payload.get("regression") or [])
    lines += [f"reference: {r}" for r in ref] or ["reference: none in the model profile for this case"]
    if reg:
        prev = (payload.get("regression") or [{}])[0].get("previous_run")
        lines += [f"regression vs {prev}: {r}" for r in reg]
    else:
        lines.append("regression: no earlier measured run of this case")
    if path:
        lines.append(f"checkpoint: {path}")
    return "\n".join(lines)

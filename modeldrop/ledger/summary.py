"""The end-of-run summary: the run's result and exit status, its gates with seconds, where the model serves and the
benchmark table. One set of facts for the terminal, handoff.md and run.json.

Contract
--------
- `result(state)` -> {"status", "at", "reason"}: `running` until the run ends; then `interrupted` (Ctrl-C, SIGTERM,
  a session that ended inside a gate), `failed` (at the first failed gate, else the first failed benchmark case),
  `blocked` (at the first gate skipped for a failed, skipped or missing upstream, or by itself; the benchmarks that
  could not start; or nothing verified at all), `green` (every gate of the order passed or was reused, or a
  benchmarks-only run whose cases all passed) or `partial` (what was selected passed; the rest of the order did
  not run, e.g. `-k transport`).
- `exit_status(state, pytest_status)`: pytest's status, except that a run pytest calls OK whose result is
  `blocked` exits EXIT_BLOCKED (6): a targeted rerun that verified nothing never says success.
- `bench_rows(bench_dir, state)`: one row per benchmark case of this run from its case JSON (`bench/<case>.json`:
  the case JSON's own numbers; request throughput is its ok requests / phase wall time), in run order, with the
  case's outcome and per-node figures when the case JSON has them.
- `serving_lines` / `serving_markdown`: where the model serves (the block `modeldrop.exo.serving` makes).
- `text_lines(…)` (terminal) and `markdown_lines(…)` (handoff.md) render the same facts.
Plain Python, no pytest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from modeldrop.ledger.handoff import PASSING, RunState, dur, one_line, reused_words

EXIT_BLOCKED = 6
STATUSES = ("running", "green", "partial", "failed", "blocked", "interrupted")
PHASE_ORDER = ("token_sweep", "thinking", "concurrency", "tasks")


# -- result and exit status --------------------------------------------------------------------------------------
def _case_of(test_name: str) -> str:
    """`test_concurrency[concurrency-c4]` -> `concurrency-c4`."""
    m = re.search(r"\[(.+)\]$", test_name)
    return m.group(1) if m else test_name


def result(state: RunState, ended: bool = False) -> dict[str, Any]:
    """The run's result (see the module docstring); `ended`: as it stands if the run ended now."""
    recs = state.in_order()
    running = next((r.gate for r in recs if r.outcome == "running"), None)
    if state.interrupted:
        return {"status": "interrupted", "at": running, "reason": one_line(state.interrupted, 300)}
    if not (state.finished or ended):
        return {"status": "running", "at": running, "reason": None}
    failed = next((r for r in recs if r.outcome == "failed"), None)
    if failed is not None:
        return {"status": "failed", "at": failed.gate, "reason": failed.reason or None}
    bench_failed = next(((n, why) for n, (o, why) in state.bench.items() if o == "failed"), None)
    if bench_failed is not None:
        return {"status": "failed", "at": f"benchmark {_case_of(bench_failed[0])}", "reason": bench_failed[1] or None}
    skipped = next((r for r in recs if r.outcome == "skipped"), None)
    if skipped is not None:
        return {"status": "blocked", "at": skipped.gate, "reason": skipped.reason or None}
    if state.bench_blocked:
        return {"status": "blocked", "at": "benchmarks", "reason": f"benchmarks cannot start: {state.bench_blocked[0]}"}
    bench_skipped = next(((n, why) for n, (o, why) in state.bench.items() if o == "skipped"), None)
    if bench_skipped is not None:
        return {"status": "blocked", "at": f"benchmark {_case_of(bench_skipped[0])}",
                "reason": bench_skipped[1] or None}
    verified = any(r.outcome in PASSING for r in recs) or any(o == "passed" for o, _ in state.bench.values())
    if not verified:
        return {"status": "blocked", "at": None, "reason": "nothing was verified: no gate or benchmark ran"}
    if all(r.outcome in PASSING for r in recs) or (state.bench_only and state.bench):
        return {"status": "green", "at": None, "reason": None}
    return {"status": "partial", "at": None,
            "reason": "the selected gates passed; the rest of the order did not run in this session"}


def exit_status(state: RunState, pytest_status: int) -> int:
    """pytest's exit status, or EXIT_BLOCKED for a run pytest calls OK that is blocked (see the module docstring)."""
    if int(pytest_status) != 0:
        return int(pytest_status)
    return EXIT_BLOCKED if result(state, ended=True)["status"] == "blocked" else 0


def result_line(res: dict[str, Any], exit_status_: int | None) -> str:
    """`green (exit 0)`, `failed at placement (exit 1): runner failed …`, `blocked at transport (exit 6): …`."""
    at = f" {'in' if res['status'] == 'interrupted' else 'at'} {res['at']}" if res.get("at") else ""
    code = f" (exit {exit_status_})" if exit_status_ is not None else ""
    why = f": {one_line(res['reason'], 240)}" if res.get("reason") else ""
    return f"{res['status']}{at}{code}{why}"


# -- where the model serves --------------------------------------------------------------------------------------
def serving_lines(block: dict[str, Any] | None) -> list[str]:
    """The serving block as terminal lines (none when the run never saw the model serve)."""
    if not block:
        return []
    how = ", ".join(x for x in (block.get("sharding"), block.get("instance_kind")) if x)
    inst = f", instance {block['instance_id']}" if block.get("instance_id") else ""
    lines = [f"serving: {block['model']}{inst}" + (f" ({how})" if how else "")]
    if block.get("stopped"):
        return lines + [f"  stopped at the end of the run: {block['stopped']}"]
    for n in block.get("nodes") or []:
        lines.append(f"  {n['node']}  {n['api_url']}" + (f"  (node id {n['node_id']})" if n.get("node_id") else ""))
    if block.get("curl"):
        lines.append(f"  try: {block['curl']}")
    return lines


# -- the benchmark table -----------------------------------------------------------------------------------------
def _num(d: Any, *keys: str) -> float | None:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def _ms(dist: Any) -> dict[str, float | None]:
    return {k: (None if (v := _num(dist, k)) is None else v * 1000.0) for k in ("mean", "p50", "p99")}


def case_row(payload: dict[str, Any], outcome: str | None) -> dict[str, Any]:
    """A case JSON's headline figures (the case JSON's own numbers; latencies in ms, E2E in s)."""
    s = payload.get("summary") or {}
    ok, wall = _num(s, "ok"), _num(s, "phase_wall_s")
    per_node = s.get("per_node") if isinstance(s.get("per_node"), dict) else None
    return {
        "case": payload.get("case_id"), "phase": payload.get("phase"), "outcome": outcome,
        "reused_from": payload.get("reused_from"),
        "requests": s.get("requests"), "errors": s.get("errors"),
        "ttft_ms": _ms(s.get("ttft_s")), "tpot_ms": _ms(s.get("tpot_s")), "itl_ms": _ms(s.get("itl_s")),
        "e2e_s": {k: _num(s, "e2e_s", k) for k in ("mean", "p50", "p99")},
        "decode_tps_p50": _num(s, "decode_tps", "p50"), "output_tps": _num(s, "aggregate_output_tps"),
        "request_tps": ok / wall if ok is not None and wall else None,
        "prefill_tps_p50": _num(s, "server_prompt_tps", "p50"), "peak_memory_gb": _num(s, "peak_memory_gb"),
        "server_generation_tps_p50": _num(s, "server_generation_tps", "p50"),
        "per_node": per_node or None,
    }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("case_id") else None


class BenchRows:
    """This run's benchmark rows from `bench_dir`, each case JSON read once per change (mtime and size)."""

    def __init__(self, bench_dir: Path):
        self.bench_dir = bench_dir
        self._cache: dict[Path, tuple[tuple[int, int], dict[str, Any] | None]] = {}

    def payloads(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        try:
            paths = sorted(self.bench_dir.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        except OSError:
            return out
        for p in paths:
            try:
                st = p.stat()
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size)
            if p not in self._cache or self._cache[p][0] != key:
                self._cache[p] = (key, _read(p))
            payload = self._cache[p][1]
            if payload is not None:
                out[str(payload["case_id"])] = payload
        return out

    def rows(self, state: RunState) -> list[dict[str, Any]]:
        """One row per case JSON of this run, in run order (cases the session recorded first), with its outcome."""
        outcomes = {_case_of(name): o for name, (o, _) in state.bench.items()}
        payloads = self.payloads()
        order = [c for c in outcomes if c in payloads] + [c for c in payloads if c not in outcomes]
        return [case_row(payloads[c], outcomes.get(c)) for c in order]


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


Column = tuple[str, str, Callable[[dict[str, Any]], str]]  # (group, title, cell)


def _dist_cols(group: str, key: str) -> list[Column]:
    return [(group, stat, lambda r, s=stat: _f((r.get(key) or {}).get(s))) for stat in ("mean", "p50", "p99")]


LATENCY: list[Column] = [
    ("", "case", lambda r: str(r["case"])), ("", "outcome", lambda r: r.get("outcome") or "-"),
    ("", "req", lambda r: str(r.get("requests", "-"))), ("", "err", lambda r: str(r.get("errors", "-"))),
    *_dist_cols("TTFT (ms)", "ttft_ms"), *_dist_cols("TPOT (ms)", "tpot_ms"), *_dist_cols("ITL (ms)", "itl_ms"),
    ("E2E (s)", "p50", lambda r: _f((r.get("e2e_s") or {}).get("p50"), 3)),
    ("E2E (s)", "p99", lambda r: _f((r.get("e2e_s") or {}).get("p99"), 3)),
]
THROUGHPUT: list[Column] = [
    ("", "case", lambda r: str(r["case"])),
    ("decode (tok/s)", "p50/req", lambda r: _f(r.get("decode_tps_p50"))),
    ("output (tok/s)", "aggregate", lambda r: _f(r.get("output_tps"))),
    ("requests", "req/s", lambda r: _f(r.get("request_tps"), 2)),
    ("prefill (tok/s)", "p50", lambda r: _f(r.get("prefill_tps_p50"))),
    ("EXO generation", "tok/s p50", lambda r: _f(r.get("server_generation_tps_p50"))),
    ("peak memory", "GB", lambda r: _f(r.get("peak_memory_gb"), 2)),
]
NODE_COLS = {"req": "requests", "err": "errors"}


def node_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-node figures of a case (`summary.per_node`) as rows of the same tables (only the columns they have)."""
    out = []
    for node, f in sorted((row.get("per_node") or {}).items()):
        if not isinstance(f, dict):
            continue
        ttft, e2e = _num(f, "p50_ttft_s"), _num(f, "p50_latency_s")
        threads = f.get("threads", "?")
        out.append({"case": f"  {node} ({threads} thread{'' if threads == 1 else 's'})", "outcome": None,
                    "requests": f.get("requests", "-"), "errors": f.get("errors", "-"),
                    "ttft_ms": {"p50": ttft * 1000.0 if ttft is not None else None}, "e2e_s": {"p50": e2e},
                    "decode_tps_p50": _num(f, "decode_tps"), "output_tps": _num(f, "aggregate_tps")})
    return out


def _expanded(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for r in rows for x in (r, *node_rows(r))]


def _text_table(cols: list[Column], rows: list[dict[str, Any]]) -> list[str]:
    """An aligned text table with a group header over its columns (the first column left-aligned)."""
    cells = [[c[2](r) for c in cols] for r in rows]
    widths = [max(len(c[1]), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    groups: list[tuple[str, list[int]]] = []
    for i, (g, _, _) in enumerate(cols):
        if groups and groups[-1][0] == g and g:
            groups[-1][1].append(i)
        else:
            groups.append((g, [i]))
    for g, idx in groups:  # a group title wider than its columns widens its last column
        span = sum(widths[i] for i in idx) + 2 * (len(idx) - 1)
        if len(g) > span:
            widths[idx[-1]] += len(g) - span

    def fmt(values: list[str]) -> str:
        return "  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(values))

    head = "  ".join((g.center(sum(widths[i] for i in idx) + 2 * (len(idx) - 1)) if g else
                      "  ".join(" " * widths[i] for i in idx)) for g, idx in groups)
    return [head.rstrip(), fmt([c[1] for c in cols]), *(fmt(row).rstrip() for row in cells)]


def _md_table(cols: list[Column], rows: list[dict[str, Any]]) -> list[str]:
    titles = [f"{g} {t}".strip() for g, t, _ in cols]
    out = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(c[2](r).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return out


BENCH_NOTE = ("the case JSONs' own figures (bench/<case>.json): latencies mean/p50/p99, decode tok/s per request "
              "(p50), aggregate output tok/s, req/s = ok requests / phase wall time; '-' where not reported")


def bench_text_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The benchmark table for the terminal (two aligned tables: latency, throughput)."""
    if not rows:
        return []
    full = _expanded(rows)
    return [f"benchmarks ({len(rows)} cases; {BENCH_NOTE}):", *("  " + ln for ln in _text_table(LATENCY, full)),
            "", *("  " + ln for ln in _text_table(THROUGHPUT, full))]


def bench_markdown_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The benchmark table for handoff.md (two markdown tables: latency, throughput)."""
    if not rows:
        return []
    full = _expanded(rows)
    return [f"Benchmark results ({BENCH_NOTE}):", "", *_md_table(LATENCY, full), "", *_md_table(THROUGHPUT, full)]


# -- the whole summary -------------------------------------------------------------------------------------------
def gate_lines(state: RunState) -> list[str]:
    """`  preflight       passed     3.1 s` per gate of the order that is not deselected or pending."""
    recs = [r for r in state.in_order() if r.outcome not in ("deselected", "pending")]
    if not recs:
        return []
    width = max(len(r.gate) for r in recs)
    total = sum(r.duration or 0.0 for r in recs)
    lines = [f"gates ({dur(total)} in all):"]
    for r in recs:
        why = f"  {one_line(r.reason, 100)}" if r.outcome in ("failed", "skipped", "reused") and r.reason else ""
        lines.append(f"  {r.gate.ljust(width)}  {r.outcome.ljust(8)} {dur(r.duration).rjust(8)}{why}")
    return lines


def text_lines(state: RunState, exit_status_: int | None, rows: list[dict[str, Any]]) -> list[str]:
    """The end-of-run summary for the terminal: result, gates, serving, benchmarks (the hand-off block follows)."""
    res = result(state)
    lines = [f"result: {result_line(res, exit_status_)}", *gate_lines(state), *verdict_lines(state.serving_verdict),
             *serving_lines(state.serving)]
    bench = bench_text_lines(rows)
    if bench:
        lines += bench
    elif state.bench:
        counts = {o: sum(1 for x, _ in state.bench.values() if x == o) for o in ("passed", "failed", "skipped")}
        first = next((why for _, why in state.bench.values() if why), "")
        lines.append("benchmarks: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n)
                     + (f" ({one_line(first, 200)})" if first else ""))
    return lines


def verdict_lines(block: dict[str, Any] | None) -> list[str]:
    """Preflight's "will it serve?" in one line (its items are in handoff.md), or nothing before preflight."""
    if not block:
        return []
    items = ", ".join(f"{name} {(it or {}).get('status', '?')}" for name, it in (block.get("items") or {}).items())
    return [f"will it serve: {block.get('outcome')} (from {block.get('source')}{'; ' + items if items else ''})"
            + reused_words(block)]



def serving_markdown(block: dict[str, Any] | None) -> list[str]:
    """The serving block as handoff.md bullets."""
    if not block:
        return []
    how = ", ".join(x for x in (block.get("sharding"), block.get("instance_kind")) if x)
    inst = f" instance `{block['instance_id']}`" if block.get("instance_id") else ""
    head = f"- **Serving:** `{block['model']}`{inst}" + (f" ({how})" if how else "")
    if block.get("stopped"):
        return [f"{head}; stopped at the end of the run: {block['stopped']}"]
    urls = ", ".join(f"{n['node']} {n['api_url']}" for n in block.get("nodes") or [])
    return [f"{head} at {urls}", *([f"- **Try it:** `{block['curl']}`"] if block.get("curl") else [])]


def markdown_parts(state: RunState, rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The summary's parts of handoff.md (`handoff.render(state, summary=…)`)."""
    return {"ninety": [f"- **Result:** {result_line(result(state), state.exit_status)}"],
            "header": serving_markdown(state.serving),
            "ledger": ["", *bench_markdown_lines(rows)] if rows else []}

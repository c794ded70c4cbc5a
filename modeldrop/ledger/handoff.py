"""handoff.md: the runbook a colleague reads to take over a bootstrap, rewritten after every gate event.

Contract:
- `render(state)` returns the markdown with exactly these sections, in the guide's order: the stable
  `## 90-Second Handoff` (operator protocol), `## Current Run Header` (mutable: model, nodes, dirs, state,
  blocker), the stable `## Phase Gates` (each gate's pass/stop criteria) and `## Failure Signatures`
  (the signature reference), `## Run Ledger` (mutable: timestamped outcomes per gate, matched
  signatures) and `## Hand-off Block` (a fenced block of the guide's `FIELD: value` lines, `HANDOFF_KEYS`).
- `handoff_fields(state)` returns the Hand-off Block values; `block_lines` is how every output prints them
  (handoff.md, ledger.html, the terminal summary, `model-drop`).
- NEXT_COMMAND works as printed: a failed (or gate-skipped) gate -> the base command `-k <gate>`;
  a run stopped for lack of a reusable pass, interrupted or partial -> base `--resume-bootstrap`;
  a green bootstrap -> the benchmark command; a green audit -> the bootstrap command (prefixed
  `env AUDIT=0` when the audit came from the environment or the env file); benchmarks that cannot start ->
  the command that fixes it (`fix_command`); failed benchmark cases -> their phases measured again
  (`-k <phase> --rerun-benchmarks`), never a list of cases.
- DO_NOT_REPEAT lists the gates that passed (here or by reuse) for this run's fingerprints.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from modeldrop.gatetable import phase_of
from modeldrop.ledger import runbook

HANDOFF_KEYS = ("MODEL", "NODES", "MODEL_DIRS", "LAST_PASS_PHASE", "CURRENT_PHASE", "KNOWN_BLOCKER",
                "STRONGEST_EVIDENCE", "NEXT_COMMAND", "DO_NOT_REPEAT")
SECTIONS = ("90-Second Handoff", "Current Run Header", "Phase Gates", "Failure Signatures", "Run Ledger",
            "Hand-off Block")
PASSING = ("passed", "reused")
BAD_OUTCOMES = ("failed", "skipped")
FINISHED = (*PASSING, *BAD_OUTCOMES)  # a gate's outcome once it has finished in this session (or was reused)


def block_lines(fields: dict[str, str], keys: tuple[str, ...] = HANDOFF_KEYS) -> list[str]:
    """The Hand-off Block as the guide writes it, one `FIELD: value` line per key (handoff.md, ledger.html,
    the terminal summary and `model-drop` all print these lines)."""
    return [f"{k}: {fields.get(k, '')}" for k in keys]


def hm(t: float | None) -> str:
    """`2026-11-27 14:02:11` (UTC) or an em dash."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "—"


def dur(seconds: float | None) -> str:
    """Compact duration: `850 ms`, `42.1 s`, `12m05s`, `3h07m`."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def one_line(s: Any, limit: int = 240) -> str:
    """First non-empty line of `s`, trimmed to `limit` characters."""
    text = str(s or "").strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class GateRecord:
    """What the ledger knows about one gate of the run's order: the only record of its run state (outcome,
    root cause, reuse, deselection), changed only by `modeldrop.ledger.Ledger`."""

    gate: str
    outcome: str = "pending"  # pending | running | passed | failed | skipped | reused | deselected
    started: float | None = None
    duration: float | None = None
    reason: str = ""
    evidence: str = ""
    reused_from: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    strongest: str = ""
    warnings: list[str] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    blocked_by_missing_pass: bool = False
    root: tuple[str, str, str] | None = None  # (root gate, its outcome, its reason) behind a failure or skip
    failed_items: list[str] = field(default_factory=list)  # items with a failed phase, as soon as it fails
    resume_from: str = ""  # why --resume-bootstrap could not reuse its pass (so it ran here)

    @property
    def phase(self) -> str:
        return phase_of(self.gate)


@dataclass
class RunState:
    """The run as the hand-off sees it. `base_argv` is the rerun command without gate selection."""

    run_id: str
    started: float
    model_id: str
    nodes: list[str]
    model_dirs: list[str]
    command: list[str]
    base_argv: list[str]
    bench_argv: list[str]
    order: list[str]
    gates: dict[str, GateRecord]
    audit: bool = False
    k_exprs: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    profile_diff: dict[str, Any] = field(default_factory=dict)
    profile_said: list[str] = field(default_factory=list)
    finished: bool = False
    interrupted: str = ""
    pass_cache: str = ""
    bench_only: bool = False
    bench: dict[str, tuple[str, str]] = field(default_factory=dict)  # test name -> (outcome, reason)
    bench_blocked: tuple[str, str] | None = None  # (why the benchmarks cannot start, the command that fixes it)
    serving: dict[str, Any] | None = None  # where the model serves (`exo.serving.serving_block`), once a chat answered
    exit_status: int | None = None  # the session's exit status, once it ended
    signature_table: list[dict[str, Any]] = field(default_factory=list)  # every known signature (stable section)
    serving_verdict: dict[str, Any] | None = None  # preflight's "will it serve?" block (modeldrop.serving)

    def in_order(self) -> list[GateRecord]:
        return [self.gates[g] for g in self.order]


def _cmd(argv: list[str]) -> str:
    return shlex.join(argv)


def _first(state: RunState, outcomes: tuple[str, ...]) -> GateRecord | None:
    return next((r for r in state.in_order() if r.outcome in outcomes), None)


def green(state: RunState) -> bool:
    """Every gate of the order passed in this run or by reuse."""
    return all(r.outcome in PASSING for r in state.in_order())


def last_pass(state: RunState) -> GateRecord | None:
    """The last gate of the unbroken run of passes from the start of the order."""
    last = None
    for r in state.in_order():
        if r.outcome not in PASSING:
            break
        last = r
    return last


def current(state: RunState) -> GateRecord | None:
    """The gate the bootstrap is at: running, else the first that has not passed."""
    return _first(state, ("running",)) or next((r for r in state.in_order() if r.outcome not in PASSING), None)


def blocker(state: RunState) -> GateRecord | None:
    """The first gate that failed, or was skipped by itself (not blocked by an upstream or a missing pass)."""
    for r in state.in_order():
        if r.outcome == "failed":
            return r
        if r.outcome == "skipped" and not r.reason.startswith("blocked by") and not r.blocked_by_missing_pass:
            return r
    return None


def _bench_phase(test_name: str) -> str:
    """`test_concurrency[concurrency-c4]` -> `concurrency`."""
    return test_name.split("[", 1)[0].removeprefix("test_")


def _bench_next(state: RunState) -> str:
    """Benchmarks that cannot start: the command that fixes it; failed cases: their phases measured again (never
    a list of cases); else done, or the benchmark command."""
    if state.bench_blocked:
        return state.bench_blocked[1]
    failed = list(dict.fromkeys(_bench_phase(name) for name, (outcome, _) in state.bench.items()
                                if outcome == "failed"))
    if failed:
        return _cmd(state.bench_argv + ["-k", " or ".join(failed), "--rerun-benchmarks"])
    if state.bench:
        return "none: benchmarks done (results in bench/ and plots/)"
    return _cmd(state.bench_argv)


def next_command(state: RunState) -> str:
    """The command to run next, as printed (see module docstring)."""
    if state.bench_only:
        return _bench_next(state)
    if green(state):
        if state.audit:  # the files are ring input: the bootstrap comes next
            argv = [a for a in state.base_argv if a != "--audit"] + ["--resume-bootstrap"]
            if "--audit" not in state.base_argv:  # AUDIT=1 came from the environment or the env file
                argv = ["env", "AUDIT=0", *argv]
            return _cmd(argv)
        return _bench_next(state)
    b = blocker(state)
    if b is not None and not any(r.outcome == "running" for r in state.in_order()):
        return _cmd(state.base_argv + ["-k", state.k_exprs.get(b.gate, b.gate)])
    return _cmd(state.base_argv + ["--resume-bootstrap"])


def known_blocker(state: RunState) -> str:
    """`gate (outcome): reason`, the matched signature's cause, or `none`."""
    if state.bench_only or green(state):
        if state.bench_blocked:
            return f"benchmarks cannot start: {one_line(state.bench_blocked[0], 300)}"
        failed = [(n, r) for n, (o, r) in state.bench.items() if o == "failed"]
        return f"benchmark {failed[0][0]} (failed): {one_line(failed[0][1])}" if failed else "none"
    b = blocker(state)
    if b is None:
        missing = next((r for r in state.in_order() if r.blocked_by_missing_pass), None)
        return f"{missing.gate}: {missing.reason}" if missing else "none"
    sig = next((s for s in b.signatures if s.get("matched", True)), None)
    cause = f" — signature {sig.get('id')}: {one_line(sig.get('cause'))}" if sig else ""
    return f"{b.gate} ({b.outcome}): {one_line(b.reason)}{cause}"


def strongest_evidence(state: RunState) -> str:
    """An explicit `evidence.strongest()` of the furthest gate, else its last note, else `none`."""
    recs = [r for r in state.in_order() if r.outcome != "pending"]
    for r in reversed(recs):
        if r.strongest:
            return f"{r.gate}: {one_line(r.strongest)}"
    for r in reversed(recs):
        if r.notes and r.outcome in PASSING + ("failed", "running"):
            key, value = list(r.notes.items())[-1]
            return f"{r.gate}: {key}={one_line(value, 160)}"
    return "none"


def _phase_label(r: GateRecord | None, done: str) -> str:
    return f"{r.phase} ({r.gate})" if r is not None else done


def handoff_fields(state: RunState) -> dict[str, str]:
    """The Hand-off Block values, one line each."""
    passed = [r.gate for r in state.in_order() if r.outcome in PASSING]
    cur = current(state)
    return {
        "MODEL": state.model_id,
        "NODES": ",".join(state.nodes),
        "MODEL_DIRS": ",".join(state.model_dirs),
        "LAST_PASS_PHASE": _phase_label(last_pass(state), "none") if not state.bench_only else "n/a (benchmark run)",
        "CURRENT_PHASE": ("benchmarks" if state.bench_only else
                          _phase_label(cur, "done" + ("" if state.audit or state.bench else " (benchmarks next)"))),
        "KNOWN_BLOCKER": one_line(known_blocker(state), 400),
        "STRONGEST_EVIDENCE": one_line(strongest_evidence(state), 400),
        "NEXT_COMMAND": next_command(state),
        "DO_NOT_REPEAT": ",".join(passed) if passed else "none",
    }


def _cell(s: Any) -> str:
    return one_line(s, 200).replace("|", "\\|") or "—"


def _ninety(state: RunState, f: dict[str, str]) -> list[str]:
    recs = state.in_order()
    n_pass = sum(r.outcome == "passed" for r in recs)
    n_reuse = sum(r.outcome == "reused" for r in recs)
    running = _first(state, ("running",))
    if state.bench_only:
        status = "BENCHMARKS (bootstrap gates not run in this session): " + _bench_counts(state)
    elif running:
        status = f"RUNNING {running.gate} (phase {running.phase}) since {hm(running.started)} UTC"
        if state.interrupted:
            status = f"INTERRUPTED in {running.gate}: {state.interrupted}"
    elif green(state):
        status = "GREEN: every " + ("audit " if state.audit else "") + "gate passed"
    elif blocker(state):
        status = f"STOPPED at {blocker(state).gate}: {one_line(blocker(state).reason, 160)}"
    elif any(r.blocked_by_missing_pass for r in recs):
        status = f"STOPPED: {f['KNOWN_BLOCKER']}"
    else:
        status = "PARTIAL: the selected gates ran; the rest of the order has not"
    lines = [f"- **State:** {status}",
             f"- **Model:** `{state.model_id}` on {len(state.nodes)} node(s): {', '.join(state.nodes)}",
             f"- **Progress:** {n_pass + n_reuse}/{len(recs)} gates passed ({n_reuse} reused)"
             f"; last pass phase {f['LAST_PASS_PHASE']}; current {f['CURRENT_PHASE']}",
             f"- **Blocker:** {f['KNOWN_BLOCKER']}",
             f"- **Next:** `{f['NEXT_COMMAND']}`"]
    if state.bench and not state.bench_only:
        lines.append(f"- **Benchmarks:** {_bench_counts(state)}")
    warnings = state.warnings + [f"{r.gate}: {w}" for r in recs for w in r.warnings]
    if warnings:
        lines.append(f"- **Warnings ({len(warnings)}):** " + "; ".join(one_line(w, 160) for w in warnings[:5]))
    return lines


def _bench_counts(state: RunState) -> str:
    outcomes = [o for o, _ in state.bench.values()]
    return ", ".join(f"{outcomes.count(o)} {o}" for o in ("passed", "failed", "skipped") if o in outcomes) or "none ran"


def _bench_table(state: RunState) -> list[str]:
    if not state.bench:
        return []
    rows = ["", f"Benchmarks: {_bench_counts(state)}", "", "| benchmark | outcome | reason |", "|---|---|---|"]
    rows += [f"| {_cell(n)} | {o} | {_cell(r)} |" for n, (o, r) in state.bench.items()]
    return rows


def _gate_table(state: RunState) -> list[str]:
    rows = ["| gate | phase | outcome | started (UTC) | duration | evidence / reason | reused from |",
            "|---|---|---|---|---|---|---|"]
    for r in state.in_order():
        detail = r.reason if r.outcome in ("failed", "skipped") else (r.evidence or r.reason)
        if r.warnings:
            detail = f"{detail} (warning: {one_line(r.warnings[0], 80)})" if detail else f"warning: {r.warnings[0]}"
        rows.append(f"| {r.gate} | {r.phase} | {r.outcome} | {hm(r.started)} | {dur(r.duration)} "
                    f"| {_cell(detail)} | {_cell(r.reused_from)} |")
    return rows


def _signature_table(state: RunState) -> list[str]:
    sigs = [(r.gate, s) for r in state.in_order() for s in r.signatures if s.get("matched", True)]
    if not sigs:
        return ["No failure signature matched."]
    rows = ["| id | gate | title | cause | next command |", "|---|---|---|---|---|"]
    for gate, s in sigs:
        nxt = s.get("next_command") or ""
        rows.append(f"| {_cell(s.get('id'))} | {gate} | {_cell(s.get('title'))} | {_cell(s.get('cause'))} "
                    f"| {('`' + _cell(nxt) + '`') if nxt else '—'} |")
    return rows


def _ledger_links(state: RunState) -> list[str]:
    lines = ["- [ledger.html](ledger.html): the pytest-html ledger (self-contained)",
             "- [ledger.jsonl](ledger.jsonl): one JSON record per gate event",
             "- [manifests/](manifests/), [logs/](logs/), [exo/](exo/), [bench/](bench/), [plots/](plots/)"]
    if state.pass_cache:
        lines.append(f"- pass cache: `{state.pass_cache}`")
    if state.profile_diff:
        changed = ", ".join(f"{k}: {v.get('old')!r} -> {v.get('new')!r}" for k, v in state.profile_diff.items()
                            if k != "observed")
        said = " ".join(state.profile_said)
        lines.append(f"- profile updated: {one_line(f'{said} ({changed})' if said else changed, 600)}")
    return lines


def reused_words(block: dict[str, Any]) -> str:
    """" — judged by the reused pass of <when>" when a serving verdict came with a reused pass, else ""."""
    return f" — judged by the reused pass of {block['reused_from']}" if block.get("reused_from") else ""


def _serving_lines(state: RunState) -> list[str]:
    """The serving verdict, one line per item (empty until preflight judged it)."""
    sv = state.serving_verdict
    if not sv:
        return []
    lines = [f"- **Will it serve:** {sv.get('outcome')} (from {sv.get('source')}){reused_words(sv)}"]
    lines += [f"  - {name}: {(it or {}).get('status', '?').upper()}: {one_line((it or {}).get('line'), 300)}"
              for name, it in (sv.get("items") or {}).items()]
    return lines


def fix_command(state: RunState, kind: str) -> str:
    """The command that fixes what keeps the benchmarks from starting: `preflight` (a node cannot be reached: the
    preflight gate says why) or `bootstrap` (no chat pass, or no cluster serving: the gates, reusing what holds)."""
    if kind == "preflight":
        return _cmd(state.base_argv + ["-k", state.k_exprs.get("preflight", "preflight")])
    return _cmd(state.base_argv + ["--resume-bootstrap"])


def render(state: RunState, summary: dict[str, list[str]] | None = None) -> str:
    """The whole handoff.md (see module docstring for the section order); `summary` adds the end-of-run summary's
    markdown: `ninety` (the result line), `header` (where the model serves), `ledger` (the benchmark table)."""
    extra = summary or {}
    f = handoff_fields(state)
    header = [f"- **Run id:** `{state.run_id}`",
              f"- **Started:** {hm(state.started)} UTC" + ("" if not state.finished else " (finished)"),
              f"- **Model:** `{state.model_id}`",
              "- **Nodes:** " + ", ".join(f"node{i}=`{t}`" for i, t in enumerate(state.nodes, 1)),
              "- **Model dirs:** " + ", ".join(f"node{i}=`{d}`" for i, d in enumerate(state.model_dirs, 1)),
              f"- **Mode:** {'audit' if state.audit else 'benchmarks' if state.bench_only else 'bootstrap'}",
              f"- **Command:** `{_cmd(state.command)}`", *extra.get("ninety", []), *_ninety(state, f),
              *_serving_lines(state), *extra.get("header", [])]
    block = ["```text", *block_lines(f), "```"]
    parts = [f"# modeldrop hand-off: {state.model_id}", "",
             "## 90-Second Handoff", "", *runbook.OPERATOR_PROTOCOL, "",
             "## Current Run Header", "", *header, "",
             "## Phase Gates", "", *runbook.criteria_table(state.order), "",
             "## Failure Signatures", "", *runbook.signature_reference(state.signature_table), "",
             "## Run Ledger", "", *_gate_table(state), *_bench_table(state), *extra.get("ledger", []), "",
             "Signatures matched in this run:", "", *_signature_table(state), "", *_ledger_links(state), "",
             "## Hand-off Block", "", *block, ""]
    return "\n".join(parts)


def parse_block(markdown: str) -> dict[str, str]:
    """The `FIELD: value` lines of the Hand-off Block of a handoff.md (for the CLI and tests); the older
    `FIELD=value` form is read too."""
    _, _, tail = markdown.partition("## Hand-off Block")
    out: dict[str, str] = {}
    for line in tail.splitlines():
        m = re.match(r"^([A-Z_]+)(?:: |=)(.*)$", line)
        if m and m.group(1) in HANDOFF_KEYS:
            out[m.group(1)] = m.group(2)
    return out

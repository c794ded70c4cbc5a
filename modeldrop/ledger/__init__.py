"""The run ledger: run folder, ledger.jsonl, handoff.md, pass cache, fingerprints, pytest-html glue.

`Ledger` is the one writer of a run's ledger.jsonl, handoff.md and run.json, and the one owner of each
gate's run state (`RunState.gates[gate]`: outcome, root cause, reuse, deselection). Contract:
- every gate event (`gate_start`, `gate_result`, `gate_reused`, `item_failed`, `deselect`, `resume_from`,
  `note`, `signatures`, …) changes the state and appends one fsynced line to ledger.jsonl, and rewrites
  handoff.md and run.json atomically before returning, so all three are current after every event,
  whatever kills the run afterwards; nothing else changes the state (the plugin asks `outcome(gate)`,
  `root_cause(gate)`, `failed_gates()`, … and never reaches into `state`);
- `gate=None` events (benchmarks, run-level warnings) land in ledger.jsonl and the run-level
  warnings of the hand-off;
- secrets given to the constructor never reach any of them (`modeldrop.redaction`);
- `plots/timeline.png` (every gate and each node's download as a bar on one time axis) is redrawn in the
  background after every gate or download event and drawn once more at the run's end, green or not.
Plain Python: the plugin (modeldrop.plugin) calls it from pytest hooks.
"""

from __future__ import annotations

import functools
import json as _json
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modeldrop.ledger import html as lhtml
from modeldrop.ledger import runjson, summary
from modeldrop.ledger.handoff import (
    BAD_OUTCOMES,
    FINISHED,
    GateRecord,
    RunState,
    fix_command,
    green,
    handoff_fields,
    hm,
    one_line,
    render,
)
from modeldrop.ledger.jsonl import JsonlLedger
from modeldrop.ledger.runfolder import RunFolder, atomic_write_json, atomic_write_text
from modeldrop.ledger.timeline import TimelineWriter
from modeldrop.redaction import masked, redact, redact_obj

__all__ = ["Evidence", "Ledger", "GateRecord", "RunState", "RunFolder"]

TIMELINE_EVENTS = frozenset({"gate_start", "pass", "fail", "skip", "reuse", "download_start", "download_end"})
NOTE_KEYS = ("total_size_bytes", "safetensors_count", "gguf_count", "instance_id", "hub_commit",
             "exo_version", "manifest_digest", "warning")


def _locked(method):
    """Serialize a Ledger method: gates may record evidence from worker threads."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


class Ledger:
    """Writer of ledger.jsonl and handoff.md for one run (thread-safe)."""

    def __init__(self, folder: RunFolder, state: RunState, secrets: Iterable[str] = ()):
        self._lock = threading.RLock()
        self.folder = folder
        self.state = state
        self._secrets = masked(secrets)
        self.jsonl = JsonlLedger(folder.path / "ledger.jsonl", self._secrets)
        self.timeline = TimelineWriter(self.jsonl.path, folder.path / "plots" / "timeline.png")
        self.bench_rows = summary.BenchRows(folder.path / "bench")
        self._verdict_gate: str | None = None  # the gate that judged the serving verdict (its pass keeps it)

    # -- writing -------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    @_locked
    def write_handoff(self) -> None:
        """Rewrite handoff.md and run.json atomically from the current state (the benchmark rows from the case
        JSONs in bench/)."""
        rows = self.bench_rows.rows(self.state) if self.state.bench or self.state.finished else []
        atomic_write_text(self.folder.path / "handoff.md",
                          self._redact(render(self.state, summary.markdown_parts(self.state, rows))))
        atomic_write_json(self.folder.path / runjson.RUN_JSON,
                          redact_obj(runjson.summary(self.state, self.fields(), rows), self._secrets))

    def _event(self, event: str, **fields: Any) -> None:
        self.jsonl.append(event, **fields)
        self.write_handoff()
        if event in TIMELINE_EVENTS:
            self.timeline.touch()

    @_locked
    def fields(self) -> dict[str, str]:
        """The Hand-off Block values as they stand now (redacted)."""
        return {k: self._redact(v) for k, v in handoff_fields(self.state).items()}

    def _rec(self, gate: str | None) -> GateRecord | None:
        return self.state.gates.get(gate) if gate else None

    # -- run -----------------------------------------------------------------------------
    @_locked
    def begin(self, **context: Any) -> None:
        """Record the run start (model, nodes, order, options, …) and write the first handoff."""
        s = self.state
        self._event("run_start", run_id=s.run_id, model=s.model_id, nodes=s.nodes, model_dirs=s.model_dirs,
                    order=s.order, command=s.command, audit=s.audit, **context)

    @_locked
    def warning(self, text: str, gate: str | None = None) -> None:
        """A run-level (or gate) warning: ledger.jsonl and the hand-off's warnings line."""
        rec = self._rec(gate)
        (rec.warnings if rec else self.state.warnings).append(one_line(text, 400))
        self._event("warning", gate=gate, text=text)

    @_locked
    def cleanup(self, stopped: list[str]) -> None:
        """Record what the run's cleanup did to the remote processes it had started (one line each)."""
        if stopped:
            self.state.warnings.append(one_line(
                f"cleanup: {len(stopped)} remote process(es) the run started: " + "; ".join(stopped), 400))
        self._event("cleanup", stopped=stopped)

    @_locked
    def end(self, exitstatus: int, interrupted: str = "") -> None:
        """Record the run end (its exit status); a gate still `running` is marked interrupted in the hand-off."""
        self.state.finished = True
        self.state.interrupted = interrupted
        self.state.exit_status = int(exitstatus)
        self._event("run_end", exitstatus=int(exitstatus), interrupted=interrupted or None,
                    handoff=self.fields())
        self.timeline.flush()

    @_locked
    def serving(self, block: dict[str, Any]) -> None:
        """Where the model serves (`summary.serving_block`), seen answering a chat."""
        self.state.serving = dict(block)
        self._event("serving", serving=block)

    @_locked
    def serving_stopped(self, why: str) -> None:
        """The run stopped the cluster it served from (teardown, a failed gate, an interrupt)."""
        if self.state.serving is not None:
            self.state.serving = {**self.state.serving, "stopped": one_line(why, 200)}
            self._event("serving_stopped", why=why)

    @_locked
    def bench_blocked(self, cause: str, fix: str) -> None:
        """The benchmarks cannot start (`cause`, one line); `fix` is `preflight` or `bootstrap` (handoff's
        `fix_command`). Recorded once per session: the hand-off's blocker and NEXT_COMMAND say it."""
        if self.state.bench_blocked is None:
            self.state.bench_blocked = (one_line(cause, 400), fix_command(self.state, fix))
            self._event("bench_blocked", cause=cause, next_command=self.state.bench_blocked[1])

    @_locked
    def k_expressions(self, exprs: dict[str, str]) -> None:
        """The `-k` expression that selects exactly each gate's items (for the printed rerun commands)."""
        self.state.k_exprs = dict(exprs)

    @_locked
    def deselect(self, gates: list[str], bench_only: bool = False) -> None:
        """Gates of the order not selected in this session (`-k`, or a benchmarks-only run) are `deselected`;
        handoff.md and run.json are rewritten (a `deselect` record when there is any)."""
        for gate in gates:
            self.state.gates[gate].outcome = "deselected"
        self.state.bench_only = bench_only
        if gates:
            self._event("deselect", gates=list(gates), bench_only=bench_only)
        else:
            self.write_handoff()

    def download_span(self, node: str, kind: str, start: float, end: float | None = None, rc: int | None = None,
                      **extra: Any) -> None:
        """A node's download started (`kind` "start") or ended ("end", with its rc): for the timeline."""
        self.jsonl.append(f"download_{kind}", node=node, start=round(start, 3),
                          end=round(end, 3) if end is not None else None, rc=rc, **extra)
        self.timeline.touch()

    def download_attempt(self, node: str, n: int, of: int, rc: int, cause: str | None, duration_s: float,
                         retry_in_s: float | None) -> None:
        """One run of hf within a node's download (wait-and-retry): its rc, why it failed (None: it did not), and
        the wait before the next attempt (None: none follows)."""
        self.jsonl.append("download_attempt", node=node, attempt=n, of=of, rc=rc, cause=cause,
                          duration_s=round(duration_s, 1), retry_in_s=retry_in_s)

    def downloads_closed(self, result: dict[str, str]) -> None:
        """What the session's end did to downloads no gate waited for (`--parallel-downloads`)."""
        self.jsonl.append("downloads_closed", result=result)

    @_locked
    def profile_update(self, path: str, diff: dict[str, Any], said: list[str] | tuple[str, ...] = ()) -> None:
        """Record the model-profile diff written after a green bootstrap (and what it says: observed, confirmed)."""
        self.state.profile_diff, self.state.profile_said = diff, list(said)
        self._event("profile_update", path=path, diff=diff, said=list(said))

    # -- gates ---------------------------------------------------------------------------
    @_locked
    def gate_start(self, gate: str, t: float | None = None) -> None:
        """Gate `gate` starts now: the hand-off names it as running."""
        rec = self.state.gates[gate]
        rec.outcome, rec.started, rec.reason = "running", time.time() if t is None else t, ""
        self._event("gate_start", gate=gate, phase=rec.phase)

    @_locked
    def item_failed(self, gate: str, item: str, when: str) -> None:
        """A phase (`setup`/`call`/`teardown`) of one of the gate's items failed: the gate counts as failed for
        whatever runs before it finishes (a session fixture's teardown inside its last item)."""
        self.state.gates[gate].failed_items.append(item)
        self._event("item_fail", gate=gate, item=item, when=when)

    @_locked
    def resume_from(self, gate: str, why: str) -> None:
        """--resume-bootstrap found no reusable pass for `gate` (why): it runs, and its chain runs from here."""
        self.state.gates[gate].resume_from = why
        self._event("resume_from", gate=gate, why=why)

    @_locked
    def gate_result(self, gate: str, outcome: str, reason: str = "", duration: float | None = None,
                    missing_pass: bool = False, root: tuple[str, str, str] | None = None, **extra: Any) -> None:
        """Gate finished: outcome passed/failed/skipped, first reason line, duration, and `root`: the (gate,
        outcome, reason) behind a failure or skip (its own, or the upstream's that blocked it)."""
        rec = self.state.gates[gate]
        rec.outcome, rec.reason, rec.root = outcome, one_line(reason, 400), root
        rec.blocked_by_missing_pass = missing_pass
        if rec.started is None:
            rec.started = time.time()
        rec.duration = duration if duration is not None else time.time() - rec.started
        event = {"passed": "pass", "failed": "fail", "skipped": "skip"}.get(outcome, outcome)
        self._event(event, gate=gate, phase=rec.phase, reason=rec.reason or None,
                    duration_s=round(rec.duration, 3), evidence=rec.evidence or None,
                    notes=rec.notes or None, **extra)

    @_locked
    def gate_reused(self, gate: str, when: float, run_id: str, summary: dict[str, Any]) -> None:
        """Gate satisfied by a cached pass (reused under --resume-bootstrap or an upstream under -k)."""
        rec = self.state.gates[gate]
        rec.outcome, rec.reused_from = "reused", f"{hm(when)} (run {run_id})"
        rec.reason = f"reused pass from {time.strftime('%Y-%m-%d %H:%M', time.gmtime(when))} (run {run_id})"
        rec.notes = {**dict(summary.get("notes") or {}), **rec.notes}
        rec.evidence = one_line(summary.get("evidence") or "", 200)
        rec.started = rec.started or time.time()
        rec.duration = 0.0
        self._event("reuse", gate=gate, phase=rec.phase, from_time=when, from_run=run_id,
                    evidence=rec.evidence or None)
        if summary.get("serving_verdict") and self.state.serving_verdict is None:  # the reused pass's own verdict
            self.serving_verdict(gate, {**summary["serving_verdict"], "reused_from": rec.reused_from})

    def pass_cached(self, gate: str, fingerprint: str) -> None:
        """The gate's pass went to the pass cache under `fingerprint`."""
        self.jsonl.append("pass_cached", gate=gate, fingerprint=fingerprint)

    @_locked
    def bench_result(self, name: str, outcome: str, reason: str = "", duration: float | None = None) -> None:
        """A benchmark case finished (passed/failed/skipped)."""
        self.state.bench[name] = (outcome, one_line(reason, 300))
        self._event("bench", item=name, outcome=outcome, reason=one_line(reason, 300) or None,
                    duration_s=round(duration, 3) if duration is not None else None)

    @_locked
    def note(self, gate: str | None, key: str, value: Any, item: str | None = None) -> None:
        """A measured fact; `warning` notes also become hand-off warnings."""
        rec = self._rec(gate)
        if key == "warning":
            (rec.warnings if rec else self.state.warnings).append(one_line(value, 400))
        elif rec is not None:
            rec.notes[key] = value
            rec.evidence = one_line(f"{key}={value}", 200) if not rec.evidence else rec.evidence
        self._event("warning" if key == "warning" else "note", gate=gate, item=item, key=key, value=value)

    @_locked
    def serving_verdict(self, gate: str | None, block: dict[str, Any]) -> None:
        """Preflight's serving verdict (`modeldrop.serving.ServingVerdict.block`): run.json, the hand-off."""
        self.state.serving_verdict = redact_obj(block, self._secrets)
        self._verdict_gate = gate
        self._event("serving_verdict", gate=gate, verdict=self.state.serving_verdict)

    def serving_verdict_block(self) -> dict[str, Any] | None:
        """The serving verdict block of this run, or None."""
        return self.state.serving_verdict

    @_locked
    def evidence_line(self, gate: str, text: str) -> None:
        """Set the one-line evidence shown in the Phase Gates table."""
        rec = self._rec(gate)
        if rec is not None:
            rec.evidence = one_line(text, 200)

    @_locked
    def strongest(self, gate: str | None, text: str, item: str | None = None) -> None:
        """Set STRONGEST_EVIDENCE explicitly (the furthest gate's wins)."""
        rec = self._rec(gate)
        if rec is not None:
            rec.strongest = one_line(text, 400)
            rec.evidence = rec.strongest
        self._event("strongest", gate=gate, item=item, text=text)

    @_locked
    def signatures(self, gate: str | None, sigs: list[dict[str, Any]], item: str | None = None) -> None:
        """Failure signatures a gate matched (dicts: id, title, cause, next_command, matched)."""
        clean = [{k: s.get(k) for k in ("id", "title", "cause", "next_command", "matched")} for s in sigs]
        rec = self._rec(gate)
        if rec is not None:
            rec.signatures.extend(clean)
        self._event("signature", gate=gate, item=item, signatures=clean)

    @_locked
    def evidence_file(self, gate: str | None, kind: str, name: str, path: str | None = None,
                      item: str | None = None) -> None:
        """An evidence attachment (text/json/png) of a gate, as a ledger record (jsonl only)."""
        self.jsonl.append("evidence", gate=gate, item=item, kind=kind, name=name, path=path)


    # -- reading -------------------------------------------------------------------------
    @property
    def started(self) -> float:
        """When the run started (epoch seconds)."""
        return self.state.started

    def outcome(self, gate: str) -> str | None:
        """passed / failed / skipped / reused for a gate finished (or reused) in this session, else None."""
        rec = self._rec(gate)
        return rec.outcome if rec is not None and rec.outcome in FINISHED else None

    def reason(self, gate: str) -> str:
        """The first line of why `gate` ended as it did (empty while it runs)."""
        rec = self._rec(gate)
        return rec.reason if rec is not None else ""

    def root_cause(self, gate: str) -> tuple[str, str, str]:
        """(root gate, outcome, reason) behind `gate`'s outcome ((gate, "not run", "") before it finished)."""
        rec = self._rec(gate)
        if rec is not None and rec.root is not None:
            return rec.root
        return gate, self.outcome(gate) or "not run", ""

    def failed_gates(self) -> list[str]:
        """Gates with a failed item in this session, in run order (known as soon as the item's phase fails)."""
        return [r.gate for r in self.state.in_order() if r.failed_items]

    def first_bad_gate(self) -> str | None:
        """The first gate of the order that failed or was skipped in this session."""
        return next((r.gate for r in self.state.in_order() if r.outcome in BAD_OUTCOMES), None)

    def running(self) -> list[str]:
        """Gates started and not finished (the one a killed session was in)."""
        return [r.gate for r in self.state.in_order() if r.outcome == "running"]

    def green(self) -> bool:
        """Every gate of the order passed in this session or by reuse."""
        return green(self.state)

    def resumed_at(self) -> list[str]:
        """Gates --resume-bootstrap ran because their pass was not reusable, in run order."""
        return [r.gate for r in self.state.in_order() if r.resume_from]

    def pass_summary(self, gate: str) -> dict[str, Any]:
        """What a cached pass keeps of the gate: its notes, one-line evidence, and the serving verdict it judged (a
        run that reuses the pass shows that verdict, marked reused)."""
        rec = self.state.gates[gate]
        kept: dict[str, Any] = {"notes": rec.notes, "evidence": rec.evidence}
        if gate == self._verdict_gate and self.state.serving_verdict:
            kept["serving_verdict"] = {k: v for k, v in self.state.serving_verdict.items() if k != "reused_from"}
        return kept

    def notes(self) -> dict[str, Any]:
        """Every gate's notes merged in run order (a later gate's value wins)."""
        merged: dict[str, Any] = {}
        for rec in self.state.in_order():
            merged.update(rec.notes)
        return merged

    @_locked
    def summary_lines(self) -> list[str]:
        """The end-of-run summary for the terminal: result and exit status, gates with seconds, where the model
        serves, the benchmark table (redacted)."""
        rows = self.bench_rows.rows(self.state)
        return [self._redact(line) for line in summary.text_lines(self.state, self.state.exit_status, rows)]

    def result(self) -> dict[str, Any]:
        """The run's result as it stands (`summary.result`)."""
        return summary.result(self.state)

    def exit_status(self, pytest_status: int) -> int:
        """The session's exit status for pytest's (`summary.exit_status`: EXIT_BLOCKED for a blocked run)."""
        return summary.exit_status(self.state, pytest_status)

    @_locked
    def summary_html(self) -> str:
        """The hand-off block, gate table and timeline for the top of ledger.html."""
        return lhtml.summary_html(self.fields(), self.state, self.timeline.png)


class Evidence:
    """What a gate leaves as evidence: report extras for ledger.html, records for ledger.jsonl and handoff.md.

    `.text(name, s)`, `.json(name, obj)`, `.png(name, path_or_bytes)` queue pytest-html extras (drained
    into the report of the current phase by the plugin) and log an `evidence` record;
    `.note(key, value)` records a fact (`warning` notes become hand-off warnings); `.serving(block)` says where
    the model serves; `.serving_verdict(block)` records preflight's serving verdict;
    `.signatures(list_of_dicts)` records matched failure signatures; `.strongest(text)` sets
    STRONGEST_EVIDENCE. Without a ledger (self-tests) everything is kept in memory only.
    Secrets are replaced by `***` in every text.
    """

    def __init__(self, ledger: Ledger | None, gate: str | None, item: str, folder: RunFolder | None = None,
                 secrets: Iterable[str] = ()):
        self._html = lhtml
        self.ledger = ledger
        self.gate = gate
        self.item = item
        self.folder = folder
        self._secrets = masked(secrets)
        self._pending: list[dict[str, Any]] = []
        self.notes: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.matched: list[dict[str, Any]] = []
        self.strongest_text: str = ""
        self.serving_block: dict[str, Any] | None = None

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _label(self, name: str) -> str:
        return f"{self.gate}: {name}" if self.gate else name

    def _log(self, kind: str, name: str, path: str | None = None) -> None:
        if self.ledger is not None:
            self.ledger.evidence_file(self.gate, kind, name, path, item=None if self.gate else self.item)

    def _spill(self, name: str, text: str) -> str | None:
        """Keep a full copy of a long text in logs/ (the extra is capped)."""
        if self.folder is None or len(text) <= self._html.MAX_TEXT:
            return None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.gate or 'item'}--{name}")[:120]
        return str(self.folder.write_text(f"logs/{safe}.txt", text))

    def text(self, name: str, s: str) -> None:
        """Attach a text (command transcript, log tail)."""
        s = self._redact(str(s))
        self._pending.append(self._html.text_extra(s, self._label(name)))
        self._log("text", name, self._spill(name, s))

    def json(self, name: str, obj: Any) -> None:
        """Attach a JSON document (state snapshot, verdict)."""
        safe = redact_obj(_json.loads(_json.dumps(obj, default=str)), self._secrets)
        self._pending.append(self._html.json_extra(safe, self._label(name)))
        self._log("json", name)

    def png(self, name: str, path_or_bytes: bytes | str | Path) -> None:
        """Attach a PNG (plot), embedded in the self-contained ledger."""
        self._pending.append(self._html.png_extra(path_or_bytes, self._label(name)))
        self._log("png", name, str(path_or_bytes) if not isinstance(path_or_bytes, bytes) else None)

    def html(self, content: str) -> None:
        """Attach raw HTML (the caller escapes anything from a node)."""
        self._pending.append(self._html.html_extra(content))

    def note(self, key: str, value: Any) -> None:
        """Record a measured fact (see NOTE_KEYS); `warning` notes become hand-off warnings."""
        value = self._redact(value) if isinstance(value, str) else value
        if key == "warning":
            self.warnings.append(str(value))
        else:
            self.notes[key] = value
        if self.ledger is not None:
            self.ledger.note(self.gate, key, value, item=None if self.gate else self.item)

    def signatures(self, sigs: list[dict[str, Any]]) -> None:
        """Record matched failure signatures (dicts with id, title, cause, next_command, matched)."""
        sigs = [dict(s) for s in sigs]
        self.matched.extend(sigs)
        if self.ledger is not None and sigs:
            self.ledger.signatures(self.gate, sigs, item=None if self.gate else self.item)

    def serving_verdict(self, block: dict[str, Any]) -> None:
        """Record the serving verdict block (ledger.jsonl, run.json, the hand-off's lines)."""
        self.serving_block = block
        if self.ledger is not None:
            self.ledger.serving_verdict(self.gate, block)
    def serving(self, block: dict[str, Any]) -> None:
        """Where the model serves (`modeldrop.ledger.summary.serving_block`): the run summary's serving block."""
        if self.ledger is not None:
            self.ledger.serving(block)

    def strongest(self, text: str) -> None:
        """Set the hand-off's STRONGEST_EVIDENCE to `text`."""
        self.strongest_text = self._redact(str(text))
        if self.ledger is not None:
            self.ledger.strongest(self.gate, self.strongest_text, item=None if self.gate else self.item)

    def drain(self) -> list[dict[str, Any]]:
        """The extras queued since the last drain (the plugin attaches them to the phase's report)."""
        out, self._pending = self._pending, []
        return out

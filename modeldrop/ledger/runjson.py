"""run.json: the machine-readable contract of a run, rewritten atomically after every ledger event.

It holds the run's identity (run id, model, nodes, dirs, audit, order), its result (green / partial / failed at
a gate / blocked / interrupted / running) and exit status (once it ended), each gate's phase, outcome, reason,
start and duration, where the model serves (each node's API URL, model and instance id, sharding, instance
kind, a curl to paste), the benchmarks' outcomes and headline figures (from their case JSONs), whether the run
finished, the Hand-off Block fields, and preflight's `serving_verdict` block (None until preflight judged it).
`run.schema.json` beside this module is its JSON Schema (SCHEMA_PATH);
the self-tests validate every run.json they write against it. Tools (model-drop, model-drop-latest) read it
instead of parsing handoff.md or ledger.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modeldrop.ledger import summary as run_summary
from modeldrop.ledger.handoff import RunState

RUN_JSON = "run.json"
SCHEMA_PATH = Path(__file__).with_name("run.schema.json")
VERSION = 2
GOOD = ("passed", "reused")


def summary(state: RunState, fields: dict[str, str], bench_rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The run.json document of a run as it stands (secrets are the caller's to redact); `bench_rows` are the
    benchmark cases' headline figures (`summary.BenchRows.rows`)."""
    return {
        "version": VERSION, "run_id": state.run_id, "model": state.model_id, "nodes": state.nodes,
        "model_dirs": state.model_dirs, "audit": state.audit, "order": state.order,
        "started": state.started, "finished": state.finished, "interrupted": state.interrupted or None,
        "result": run_summary.result(state), "exit_status": state.exit_status, "serving": state.serving,
        "gates": {r.gate: {"phase": r.phase, "outcome": r.outcome, "reason": r.reason or None, "started": r.started,
                           "duration_s": None if r.duration is None else round(r.duration, 3),
                           "reused_from": r.reused_from or None} for r in state.in_order()},
        "bench": {name: {"outcome": o, "reason": why or None} for name, (o, why) in state.bench.items()},
        "bench_blocked": ({"cause": state.bench_blocked[0], "next_command": state.bench_blocked[1]}
                          if state.bench_blocked else None),
        "benchmarks": list(bench_rows or []),
        "handoff": fields,
        "serving_verdict": state.serving_verdict,
    }


def read(folder: Path) -> dict[str, Any] | None:
    """A run folder's run.json, or None when absent or unreadable."""
    try:
        data = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def all_passed(run: dict[str, Any] | None) -> bool:
    """Every gate of the run's order passed or was reused."""
    gates = (run or {}).get("gates") or {}
    return bool((run or {}).get("order")) and all((gates.get(g) or {}).get("outcome") in GOOD for g in run["order"])


def audit_ready(run: dict[str, Any] | None) -> bool:
    """An audit run in which every gate of its order passed or was reused."""
    return bool(run and run.get("audit")) and all_passed(run)

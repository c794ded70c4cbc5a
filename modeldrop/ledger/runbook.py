"""The stable sections of handoff.md, as the bootstrap guide keeps them: the operator protocol, each
phase's pass/stop criteria (from the gate table, `modeldrop.gatetable`), and the failure-signature
reference (symptom -> likely cause -> next command).

These do not change from run to run; the mutable sections (run header, run ledger, hand-off block)
are rendered by `modeldrop.ledger.handoff`.
"""

from __future__ import annotations

from typing import Any

from modeldrop.gatetable import criteria_of, phase_of

OPERATOR_PROTOCOL = (
    "If you are inheriting this run, do this in order:",
    "1. Confirm target nodes, model id and model dirs are correct on every host (Current Run Header).",
    "2. Confirm the model artifacts are complete on every host (verify and parity gates) before any EXO "
    "create/placement.",
    "3. Confirm the cluster join (topology lists every node) before any benchmark.",
    "4. Confirm serving truth with an actual /v1/chat/completions answer, not only /state runner maps.",
    "5. Only then run long benchmarks.",
    "",
    "Working means: every node reachable in the same namespace; artifacts complete and parity-passing on every "
    "node; chat answers through every node; benchmark artifacts written as each phase completes.",
    "Fast stops: hf binary missing on a node; model dir mismatch (~/Models/... vs ~/.exo/models/...); cluster "
    "isolated (fewer nodes than configured) longer than the cluster window (--cluster-window); repeated create with "
    "nodeToRunner=0 and no successful chat.",
    "One direct download per node, no transfers between nodes; each phase passes before the next; no "
    "transport or inference work before every node passes file integrity.",
)

def _cell(s: Any) -> str:
    return str(s or "").replace("|", "\\|").replace("\n", " ") or "—"


def criteria_table(order: list[str]) -> list[str]:
    """One row per gate of the order: phase, gate, PASS if, STOP if (the gate table's criteria)."""
    rows = ["| phase | gate | PASS if | STOP if |", "|---|---|---|---|"]
    for gate in order:
        passed, stop = criteria_of(gate)
        rows.append(f"| {phase_of(gate)} | {gate} | {_cell(passed)} | {_cell(stop)} |")
    return rows


def signature_reference(rows: list[dict[str, Any]]) -> list[str]:
    """The failure-signature table: symptom -> likely cause -> next command, for every known signature."""
    if not rows:
        return ["(no signature table recorded for this run)"]
    out = ["| id | gates | symptom | likely cause | next command |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {_cell(r.get('id'))} | {_cell(', '.join(r.get('gates') or ()))} | {_cell(r.get('title'))} "
                   f"| {_cell(r.get('cause'))} | `{_cell(r.get('next_command'))}` |")
    return out

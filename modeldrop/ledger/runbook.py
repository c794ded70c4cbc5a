"""The stable sections of handoff.md, as the bootstrap guide keeps them: the operator protocol, each
phase's pass/fail criteria, and the failure-signature reference (symptom -> likely cause -> next command).

These do not change from run to run; the mutable sections (run header, run ledger, hand-off block)
are rendered by `modeldrop.ledger.handoff`.
"""

from __future__ import annotations

import re
from typing import Any

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
    "isolated (fewer nodes than configured) longer than the cluster window (60 s); repeated create with "
    "nodeToRunner=0 and no successful chat.",
    "One direct download per node, no transfers between nodes; each phase passes before the next; no "
    "transport or inference work before every node passes file integrity.",
)

# gate kind -> (PASS if, STOP if)
PHASE_CRITERIA: dict[str, tuple[str, str]] = {
    "preflight": ("SSH and python3 on every node; the exact hf (and exo) binary runs on each; disk free covers the "
                  "model; parent of the model dir writable; nodes reach each other (at least around a ring); no "
                  "node listed twice; same exo build; API port free; model dir named org--name",
                  "a node unreachable; a binary missing on one node; disk clearly insufficient; the model complete "
                  "in another dir (model dir mismatch); exo build drift"),
    "download": ("`hf download` into MODEL_DIR_NODEk exits 0 (one direct download per node)",
                 "hf fails after its own retries"),
    "verify": ("no .incomplete/.part markers; the expected files with their sizes (hub or cached tree); counts "
               "match EXPECTED_SAFE_TENSOR_COUNT / EXPECTED_GGUF_COUNT when set; the index names only present shards",
               "a marker remains after a retry; counts fail; a file missing or of another size"),
    "canary": ("exo alone on node 1: /state answers; MODEL_ID listed in /v1/models?status=downloaded from the "
               "audited dir", "API unreachable; exo exits; the model is not listed (fix node 1 and restart from "
               "Phase 1)"),
    "parity": ("every node holds the same serving artifacts (path + size; HF cache metadata ignored), one format, "
               "index and config present", "shard count or size mismatch; a node missing index/config files"),
    "startup": ("exo up on every node with identical flags; API answers; no exit or restart in the settle window",
                "immediate crash loop; API unreachable"),
    "cluster": ("every node's topology lists all N nodes, linked as EXO needs to place the instance over all of "
                "them (a ring for MlxRing, every pair for MlxJaccl), within the cluster window",
                "isolated (fewer than N nodes) for longer than the cluster window; no ring (a missing link)"),
    "placement": ("model listed as downloaded; instance created (Pipeline + MlxRing unless configured); every runner "
                  "Ready, or, while nodeToRunner stays 0, a chat answers through every node",
                  "nodeToRunner stays 0 and no chat succeeds; repeated churn or RunnerFailed"),
    "transport": ("ring hosts in the logs match /state; no `error: 60/65`; ESTABLISHED sockets to every neighbour",
                  "connection refused on transport ports; repeated backoff connect errors"),
    "chat": ("HTTP 200 before the timeout with choices, through every node, streamed and not",
             "timeout; broken transport message; incomplete response"),
}
_PER_NODE = re.compile(r"^node\d+_(download|verify|canary)$")


def kind_of(gate: str) -> str:
    """`node2_verify` -> `verify`; other gate ids are their own kind."""
    m = _PER_NODE.match(gate)
    return m.group(1) if m else gate


def _cell(s: Any) -> str:
    return str(s or "").replace("|", "\\|").replace("\n", " ") or "—"


def criteria_table(order: list[str], phase_of: Any) -> list[str]:
    """One row per gate of the order: phase, gate, PASS if, STOP if."""
    rows = ["| phase | gate | PASS if | STOP if |", "|---|---|---|---|"]
    for gate in order:
        passed, stop = PHASE_CRITERIA.get(kind_of(gate), ("—", "—"))
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

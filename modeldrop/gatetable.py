"""The gate table: every fact about each phase gate of a bootstrap, in one place.

A gate has an id (or a per-node pattern `node{k}_<kind>`), the phase number the bootstrap guide
gives it, a default timeout, the options and measured facts its pass fingerprint holds, whether it
talks to a running EXO, whether it belongs to an audit, and what it passes on. The run order,
each gate's upstream, fingerprints, timeouts, failure signatures, the hand-off's phase labels and
the README's gate table are all derived from `GATES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EXO_OPTS = ("ONLINE", "EXO_API_PORT", "EXO_NAMESPACE")
_PLACED_OPTS = (*_EXO_OPTS, "EXO_SHARDING", "EXO_INSTANCE_META")
_FILE_OPTS = ("ONLINE", "HF_INCLUDE")
_EXO_FACTS = ("hub_commit", "exo_versions")


@dataclass(frozen=True)
class Gate:
    """One row of the gate table.

    `id` is a gate id, or a pattern with `{k}` for a gate that runs once per node. `phase` is the
    guide's phase number (`later_phase` for nodes 2..N of a per-node gate). `options` are the config
    keys and `facts` the measured facts (`hub_commit`, `exo_versions`, `manifests`) its fingerprint
    holds. `needs_exo`: the gate talks to a running EXO. `cluster`: its pass is about the running
    EXO processes (a restart invalidates it). `audit`: it runs in an `--audit` (files only).
    """

    id: str
    kind: str
    phase: str
    timeout_s: float
    options: tuple[str, ...]
    facts: tuple[str, ...]
    passes_when: str
    needs_exo: bool = False
    cluster: bool = False
    audit: bool = False
    later_phase: str | None = None

    @property
    def per_node(self) -> bool:
        return "{k}" in self.id

    def id_for(self, k: int) -> str:
        """The id of this gate for node `k` (the id itself when not per node)."""
        return self.id.format(k=k) if self.per_node else self.id

    def phase_for(self, k: int | None) -> str:
        return self.later_phase if (k or 1) > 1 and self.later_phase else self.phase


# Each limit leaves the node-side limits inside the gate (and their cleanup) their time: checked by
# tests_selftest/test_timeout_nesting.py against the library's own constants.
GATES: tuple[Gate, ...] = (
    Gate("preflight", "preflight", "0", 2400, ("ONLINE", "EXO_API_PORT", "AUDIT", "DISK_MARGIN_GB"), ("exo_versions",),
         "every node: SSH, python3, the exact hf and exo binaries run, same exo build and generation everywhere "
         "(MLX, Python, macOS drift warned), EXO_EXTRA_ARGS in every `exo --help`, API port free, disk free ≥ "
         "model size + margin, model dir ends in `org--name` and its parent is writable, the model not complete "
         "in another dir while the configured one is empty (model dir mismatch: a fast stop naming both paths), "
         "nodes reach each other (at least around a ring: a pair no ring needs is a note), no node listed twice",
         audit=True),
    Gate("node{k}_download", "download", "1", 4 * 3600 + 900, (*_FILE_OPTS, "HF_REVISION"), (),
         "`hf download` into MODEL_DIR_NODE1 exits 0, with a progress line at least every 10 s", later_phase="2"),
    Gate("node{k}_verify", "verify", "1A", 9000,
         (*_FILE_OPTS, "FAST", "VERIFY_HASHES", "EXPECTED_SAFE_TENSOR_COUNT", "EXPECTED_GGUF_COUNT"),
         ("hub_commit", "manifests"),
         "no `.incomplete`/`.part`/`.partial` anywhere; one weight format; config.json; index and every shard; "
         "safetensors headers match file sizes; counts; total size against the hub's tree", audit=True,
         later_phase="2A"),
    Gate("node1_canary", "canary", "1B", 900, ("ONLINE", "EXO_API_PORT"), (*_EXO_FACTS, "manifests"),
         "exo alone on node 1 (offline, no downloads) has a card for the model (the unfiltered `/v1/models`; when "
         "it has none, `POST /models/add`, recorded) and lists the model under `?status=downloaded`; then stopped "
         "by pid", needs_exo=True),
    Gate("parity", "parity", "3", 900, ("FAST", "HF_INCLUDE"), ("hub_commit", "manifests"),
         "every node holds the same (path, size) manifest, `.cache/huggingface/` and macOS litter excluded (a `.metadata` of a file no longer there is noise, listed, never a failure)",
         audit=True),
    Gate("startup", "startup", "4", 1200, _EXO_OPTS, _EXO_FACTS,
         "exo on every node with identical flags, each API answers, nothing exits or restarts in the settle window "
         "(the cluster-join wait runs during it)",
         needs_exo=True, cluster=True),
    Gate("cluster", "cluster", "5", 1200, _EXO_OPTS, _EXO_FACTS,
         "`topology` lists N nodes, linked as EXO needs to place the instance over all of them (MlxRing: a ring "
         "whose neighbours reach each other; MlxJaccl: every pair; other missing pairs are notes; fewer than N "
         "for longer than the window is a fast stop); then every node's `/v1/models` lists the model's card, "
         "added where missing",
         needs_exo=True, cluster=True),
    Gate("placement", "placement", "5", 3600, _PLACED_OPTS, _EXO_FACTS,
         "placement for `min_nodes=N` succeeds, the instance is created, every runner reaches Ready/Running; "
         "while `/state` shows no runner of it, a chat through every node decides (serving truth; no runners "
         "and no chat by the deadline is the guide's fast stop)",
         needs_exo=True, cluster=True),
    Gate("transport", "transport", "6", 1800, _PLACED_OPTS, _EXO_FACTS,
         "the ring addresses the runners announced are in place, no connect errors (errno 60/61/65) in any log",
         needs_exo=True, cluster=True),
    Gate("chat", "chat", "7", 1800, _PLACED_OPTS, _EXO_FACTS,
         "a chat completion, streamed and not, answered through every node's API", needs_exo=True, cluster=True),
)
BY_KIND: dict[str, Gate] = {g.kind: g for g in GATES}
# the gate whose pass means "the model is served": benchmarks start only after it passed
SERVING_GATE = GATES[-1].id
DEFAULT_TIMEOUT_S = 900.0
# facts a fingerprint holds for a gate id the table does not know (never in a real run)
ALL_FACTS = ("hub_commit", "exo_versions", "manifests")
_NODE_OF = re.compile(r"^node(\d+)_")
_PATTERN = re.compile("^(?:" + "|".join(re.escape(g.id).replace(r"\{k\}", r"\d+") for g in GATES) + ")$")


def node_gate(k: int, kind: str) -> str:
    """The id of a per-node gate, e.g. node_gate(2, "verify") == "node2_verify"."""
    return f"node{k}_{kind}"


def is_gate_id(gate: str) -> bool:
    """True when `gate` is an id of the table (`node3_verify`, `chat`), False for `node2_canary`."""
    return bool(_PATTERN.match(gate))


def gate_of(gate: str) -> Gate | None:
    """The table row of a gate id (`node2_verify` -> the verify row), or None when unknown."""
    if not is_gate_id(gate):
        return None
    return BY_KIND.get(gate_kind(gate))


def gate_kind(gate: str) -> str:
    """`node2_verify` -> `verify`, `node1_canary` -> `canary`, `chat` -> `chat`."""
    m = _NODE_OF.match(gate)
    return gate[m.end():] if m and is_gate_id(gate) else gate


def gate_node(gate: str) -> int | None:
    """The node a per-node gate is about (`node2_verify` -> 2), else None."""
    m = _NODE_OF.match(gate)
    return int(m.group(1)) if m and is_gate_id(gate) else None


def gate_order(n_nodes: int, audit: bool = False) -> list[str]:
    """Gate ids in run order for a cluster of `n_nodes` (1..4): preflight, node 1's gates, nodes 2..N's
    per-node gates, then the shared gates. An audit keeps only the audit gates."""
    rows = [g for g in GATES if g.audit or not audit]
    node_rows = [g for g in rows if _NODE_OF.match(g.id) or g.per_node]
    first = [g.id for g in rows[: rows.index(node_rows[0])]] if node_rows else []
    order = list(first)
    order += [g.id_for(1) for g in node_rows]
    for k in range(2, n_nodes + 1):
        order += [g.id_for(k) for g in node_rows if g.per_node]
    return order + [g.id for g in rows if g.id not in first and g not in node_rows]


def upstream_of(gate: str, order: list[str]) -> str | None:
    """The gate that must have passed before `gate` runs (the one before it in `order`), or None."""
    i = order.index(gate)
    return order[i - 1] if i > 0 else None


def phase_of(gate: str) -> str:
    """The guide's phase number of a gate id (`node2_verify` -> `2A`, `transport` -> `6`), `?` if unknown."""
    row = gate_of(gate)
    return row.phase_for(gate_node(gate)) if row else "?"


def timeout_of(gate: str) -> float:
    """The default timeout (seconds) of a gate id."""
    row = gate_of(gate)
    return float(row.timeout_s) if row else DEFAULT_TIMEOUT_S


def exo_gates() -> tuple[str, ...]:
    """Ids of the gates that talk to a running EXO (the gates EXO failure signatures apply to)."""
    return tuple(g.id_for(1) for g in GATES if g.needs_exo)


def readme_table() -> str:
    """The README's gate table (markdown), generated from `GATES`."""
    rows = ["| id | phase | passes when |", "|---|---|---|"]
    for g in GATES:
        if g.per_node:
            rows.append(f"| {g.id_for(1)} | {g.phase} | {g.passes_when} |")
        else:
            rows.append(f"| {g.id} | {g.phase} | {g.passes_when} |")
    later = [g for g in GATES if g.per_node and g.later_phase]
    if later:
        ids = " / ".join(g.id.replace("{k}", "K") for g in later)
        rows.insert(2 + GATES.index(BY_KIND["canary"]) + 1,
                    f"| {ids} | {'/'.join(g.later_phase or '' for g in later)} | the same for nodes 2..N (with `--parallel-downloads` the download started with "
                    "node 1's; the gate waits for it) |")
    return "\n".join(rows)

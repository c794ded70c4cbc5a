"""The gate table: every fact about each phase gate of a bootstrap, in one place.

A gate has an id (or a per-node pattern `node{k}_<kind>`), the phase number the bootstrap guide
gives it, a default timeout, what it passes on and what stops the bootstrap at it (the one wording the
README, the hand-off and the runbook print), the options, measured facts and tools its pass fingerprint
holds, its `--resume-bootstrap` chain, whether it talks to a running EXO (and whether EXO was started
before it runs), and whether it belongs to an audit. The run order, each gate's upstream, fingerprints,
timeouts, pass reuse, failure signatures, the hand-off's phase labels and criteria and the README's
gate table are all derived from `GATES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EXO_OPTS = ("ONLINE", "EXO_API_PORT", "EXO_NAMESPACE", "EXO_SYNCH_FLAG")
_PLACED_OPTS = (*_EXO_OPTS, "EXO_SHARDING", "EXO_INSTANCE_META")
_FILE_OPTS = ("ONLINE", "HF_INCLUDE", "HF_EXCLUDE")
_EXO_FACTS = ("hub_commit", "exo_versions")
_EXO_TOOL = ("exo_cmd",)
# --resume-bootstrap chains in run order: a gate that runs (no reusable pass) breaks its own chain and every
# later one, so nothing after it is reused; "none" (preflight) breaks nothing but itself.
RESUME_CHAINS = ("files", "exo")


@dataclass(frozen=True)
class Gate:
    """One row of the gate table.

    `id` is a gate id, or a pattern with `{k}` for a gate that runs once per node. `phase` is the
    guide's phase number (`later_phase` for nodes 2..N of a per-node gate). `passes_when` / `stops_when`
    are its criteria (`{k}` is the node). `options` are the config keys and `facts` the measured facts
    (`hub_commit`, `exo_versions`, `manifests`) its fingerprint holds (`audit_facts` in an `--audit`, when
    they differ); `tools` the NodeConfig fields of the tools it runs (a pass does not carry over to another
    binary), `tool_versions` whether it also holds what they answer. `resume` is its `--resume-bootstrap`
    chain and `resumed_by` the kind of gate on the same node whose pass stands in for its own.
    `needs_exo`: the gate talks to a running EXO; `after_start`: EXO was started before it runs (a dead
    exo process is a diagnosis). `cluster`: its pass is about the running EXO processes (a restart
    invalidates it). `audit`: it runs in an `--audit` (files only).
    """

    id: str
    kind: str
    phase: str
    timeout_s: float
    options: tuple[str, ...]
    facts: tuple[str, ...]
    passes_when: str
    stops_when: str
    tools: tuple[str, ...] = ()
    tool_versions: bool = False
    audit_facts: tuple[str, ...] | None = None
    resume: str = "exo"
    resumed_by: str | None = None
    needs_exo: bool = False
    after_start: bool = False
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

    def criteria_for(self, k: int | None) -> tuple[str, str]:
        """(passes when, stops when) for node `k`'s gate (node 1 when None)."""
        return self.passes_when.replace("{k}", str(k or 1)), self.stops_when.replace("{k}", str(k or 1))

    def facts_for(self, audit: bool) -> tuple[str, ...]:
        """The measured facts its fingerprint holds in a bootstrap, or in an `--audit`."""
        return self.audit_facts if audit and self.audit_facts is not None else self.facts


# Each limit leaves the node-side limits inside the gate (and their cleanup) their time: checked by
# tests_selftest/unit/gatetable/test_timeout_nesting.py against the library's own constants.
GATES: tuple[Gate, ...] = (
    Gate("preflight", "preflight", "0", 2400, ("ONLINE", "EXO_API_PORT", "AUDIT", "DISK_MARGIN_GB", "HF_INCLUDE",
                                               "HF_REVISION", "EXO_SHARDING", "ALLOW_SERVING_NO_GO", "EXO_SYNCH_FLAG"),
         ("exo_versions",),
         "every node: SSH, python3, the exact hf and exo binaries run (exo, when EXO_CMD_NODEk is unset, the one "
         "found where exo installs to: Homebrew, EXO.app, uv tool, pipx; said per node), same exo build and "
         "generation everywhere (MLX, Python, macOS drift warned), EXO_EXTRA_ARGS and EXO_SYNCH_FLAG in every "
         "`exo --help`, no exo running that this run did not start (named with pid, program, owner and API port, "
         "and the one command that clears them), API port free, disk free ≥ model size + margin, model dir ends in "
         "`org--name` and its parent is writable, the model not complete in another dir while the configured one "
         "is empty (model dir mismatch: a fast stop naming both paths), no node listed twice, nodes reach each other "
         "(TCP, at least around a ring: a pair no ring needs is a note; an SSH login both ways is tried, and warned "
         "where keys do not allow it); it will serve, judged from the hub's metadata "
         "before any download: weights mlx-lm loads, `model_type` in every node's mlx-lm, the size within the nodes' "
         "available memory by EXO's placement rule, a card EXO has or can add",
         "a node unreachable; a binary missing on one node, or two exo installs and none chosen; an exo the run did "
         "not start still running; disk clearly insufficient; the model complete in another dir (model dir "
         "mismatch); exo build drift; will not serve (unknown architecture, unloadable format, does not fit, no card "
         "possible)",
         tools=("hf_cmd", "exo_cmd", "python_cmd"), tool_versions=True, audit_facts=(), resume="none", audit=True),
    Gate("node{k}_download", "download", "1", 4 * 3600 + 900, (*_FILE_OPTS, "HF_REVISION"), (),
         "`hf download` into MODEL_DIR_NODE{k} exits 0, with a progress line at least every 10 s",
         "hf fails after its own retries", tools=("hf_cmd",), resume="files", resumed_by="verify", later_phase="2"),
    Gate("node{k}_verify", "verify", "1A", 9000,  # the revision: a download falls back to this pass on a resume
         (*_FILE_OPTS, "HF_REVISION", "FAST", "VERIFY_HASHES", "EXPECTED_SAFE_TENSOR_COUNT", "EXPECTED_GGUF_COUNT"),
         ("hub_commit", "manifests"),
         "no `.incomplete`/`.part`/`.partial` anywhere; one weight format; config.json; index and every shard; "
         "safetensors headers match file sizes; counts; total size against the hub's tree",
         "a marker remains after a retry; counts fail; a file missing or of another size",
         resume="files", audit=True, later_phase="2A"),
    Gate("node1_canary", "canary", "1B", 900, ("ONLINE", "EXO_API_PORT", "EXO_SYNCH_FLAG"), (*_EXO_FACTS, "manifests"),
         "exo alone on node 1 (offline, no downloads) has a card for the model (the unfiltered `/v1/models`; when "
         "it has none, `POST /models/add`, recorded) and lists the model under `?status=downloaded`; then stopped "
         "by pid",
         "API unreachable; exo exits; the model is not listed (fix node 1 and restart from Phase 1)",
         tools=_EXO_TOOL, needs_exo=True),
    Gate("parity", "parity", "3", 900, ("FAST", "HF_INCLUDE", "HF_EXCLUDE"), ("hub_commit", "manifests"),
         "every node holds the same (path, size) manifest, `.cache/huggingface/` and macOS litter excluded (a "
         "`.metadata` of a file no longer there is noise, listed, never a failure)",
         "shard count or size mismatch; a node missing index/config files", resume="files", audit=True),
    Gate("startup", "startup", "4", 1200, _EXO_OPTS, _EXO_FACTS,
         "exo on every node with identical flags, each API answers, nothing exits or restarts in the settle window "
         "(the cluster-join wait runs during it)",
         "immediate crash loop; API unreachable", tools=_EXO_TOOL, needs_exo=True, cluster=True),
    Gate("cluster", "cluster", "5", 1200, _EXO_OPTS, _EXO_FACTS,
         "`topology` lists N nodes, linked as EXO needs to place the instance over all of them (MlxRing: a ring "
         "whose neighbours reach each other; MlxJaccl: every pair; other missing pairs are notes; fewer than N "
         "for longer than the window is a fast stop); then every node's `/v1/models` lists the model's card, "
         "added where missing (`?status=downloaded` "
         "is the canary's check: the cluster runs `--no-downloads`, so its EXO has no download coordinator to list "
         "the model as downloaded; the files themselves are the verify and parity gates')",
         "isolated (fewer than N nodes) for longer than the cluster window; no ring (a missing link)",
         tools=_EXO_TOOL, needs_exo=True, after_start=True, cluster=True),
    Gate("placement", "placement", "5", 3600, _PLACED_OPTS, _EXO_FACTS,
         "placement for `min_nodes=N` succeeds, the instance is created (its `command_id` kept), every runner "
         "reaches Ready/Running; while `/state` shows no runner of it, a chat through every node decides (serving "
         "truth; no runners and no chat by the deadline is the guide's fast stop)",
         "nodeToRunner stays 0 and no chat succeeds; repeated churn or RunnerFailed; a node's exo found dead "
         "(looked for every 5 s while runners load)",
         tools=_EXO_TOOL, needs_exo=True, after_start=True, cluster=True),
    Gate("transport", "transport", "6", 1800, _PLACED_OPTS, _EXO_FACTS,
         "the ring addresses the runners announced are in place (ESTABLISHED to every neighbour), no ring or "
         "JACCL connect errors (errno 60/61/65) in any log; while `/state` lists no runner of the instance, the "
         "ring from the runners' own hostfile lines and sockets, and with nothing to check a chat through every "
         "node (passed with a warning that says so)",
         "connection refused on transport ports; repeated backoff connect errors",
         tools=_EXO_TOOL, needs_exo=True, after_start=True, cluster=True),
    Gate("chat", "chat", "7", 1800, _PLACED_OPTS, _EXO_FACTS,
         "a chat completion, streamed and not, answered through every node's API; latency stable over a few "
         "short requests through each node (beyond `--chat-spread-max`: a warning, or a stop with "
         "`--chat-spread-stop`)",
         "timeout; broken transport message; incomplete response; a node's exo found dead (the requests still "
         "in flight are cut then, not left to their timeout)",
         tools=_EXO_TOOL, needs_exo=True, after_start=True, cluster=True),
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


def criteria_of(gate: str) -> tuple[str, str]:
    """(passes when, stops when) of a gate id, its node filled in (`—` twice when the table does not know it)."""
    row = gate_of(gate)
    return row.criteria_for(gate_node(gate)) if row else ("—", "—")


def exo_gates(after_start: bool | None = None) -> tuple[str, ...]:
    """Ids of the gates that talk to a running EXO (the gates EXO failure signatures apply to); with
    `after_start` only those that run after EXO was started (True) or that start it (False)."""
    return tuple(g.id_for(1) for g in GATES if g.needs_exo and after_start in (None, g.after_start))


def after_exo_start(gate: str) -> bool:
    """True for a gate that runs after the cluster's EXO was started (its death is then a diagnosis)."""
    row = gate_of(gate)
    return bool(row and row.after_start)


def resume_chain(gate: str) -> str:
    """The --resume-bootstrap chain of a gate id: "files", "exo" (also for an id the table does not know)
    or "none" (preflight: read-only, and an --audit's preflight differs from a bootstrap's)."""
    row = gate_of(gate)
    return row.resume if row else "exo"


def chains_broken_by(chain: str) -> set[str]:
    """The chains a gate of `chain` breaks when it runs under --resume-bootstrap: its own and every later one."""
    return set(RESUME_CHAINS[RESUME_CHAINS.index(chain):]) if chain in RESUME_CHAINS else {chain}


def resume_stand_ins(gate: str) -> list[str]:
    """The gate ids whose pass --resume-bootstrap may reuse for `gate`, in order: its own, then the same
    node's `resumed_by` gate (a verified nodeK_verify means there is nothing to download)."""
    row, k = gate_of(gate), gate_node(gate)
    return [gate] + ([node_gate(k, row.resumed_by)] if row and row.resumed_by and k is not None else [])


def readme_table() -> str:
    """The README's gate table (markdown), generated from `GATES`."""
    rows = ["| id | phase | passes when |", "|---|---|---|"]
    for g in GATES:
        rows.append(f"| {g.id_for(1)} | {g.phase} | {g.criteria_for(1)[0]} |")
    later = [g for g in GATES if g.per_node and g.later_phase]
    if later:
        ids = " / ".join(g.id.replace("{k}", "K") for g in later)
        phases = "/".join(g.later_phase or "" for g in later)
        rows.insert(2 + GATES.index(BY_KIND["canary"]) + 1,
                    f"| {ids} | {phases} | the same for nodes 2..N (with `--parallel-downloads` the download started "
                    "with node 1's; the gate waits for it) |")
    return "\n".join(rows)

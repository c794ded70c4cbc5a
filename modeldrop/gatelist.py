"""The phase gates of a bootstrap, in the order of DESIGN §2, and their dependency chain.

Every gate after the first depends on the one before it in the active order. `--audit` mode
(release orchestrator) checks the files as they are: no downloads, no canary, no exo.
"""

from __future__ import annotations

CLUSTER_GATES = ("startup", "cluster", "placement", "transport", "chat")


def node_gate(k: int, kind: str) -> str:
    """The id of a per-node gate, e.g. node_gate(2, "verify") == "node2_verify"."""
    return f"node{k}_{kind}"


def gate_order(n_nodes: int, audit: bool = False) -> list[str]:
    """Gate ids in run order for a cluster of `n_nodes` (1..4)."""
    if audit:
        return ["preflight", *[node_gate(k, "verify") for k in range(1, n_nodes + 1)], "parity"]
    order = ["preflight", node_gate(1, "download"), node_gate(1, "verify"), "node1_canary"]
    for k in range(2, n_nodes + 1):
        order += [node_gate(k, "download"), node_gate(k, "verify")]
    return order + ["parity", *CLUSTER_GATES]


def upstream_of(gate: str, order: list[str]) -> str | None:
    """The gate that must have passed before `gate` runs, or None for the first gate."""
    i = order.index(gate)
    return order[i - 1] if i > 0 else None


def phase_of(gate: str) -> str:
    """The DESIGN §2 phase label of a gate id (for the hand-off's LAST_PASS_PHASE)."""
    fixed = {"preflight": "0", "node1_download": "1", "node1_verify": "1A", "node1_canary": "1B",
             "parity": "3", "startup": "4", "cluster": "5", "placement": "5", "transport": "5b",
             "chat": "6"}
    if gate in fixed:
        return fixed[gate]
    if gate.endswith("_download"):
        return "2"
    if gate.endswith("_verify"):
        return "2A"
    return "?"

"""Can EXO place the configured instance over all N nodes of this topology? EXO's own rule, without EXO.

Contract: `ring_rule(nodes, topology, meta, names, rdma_ctl)` -> `LinkRule` (ok, the problem, notes, the ring
EXO would use, the missing links by node name). Pure. The rule is read from EXO's placement (both
generations, master/placement.py and placement_utils.py), for `min_nodes = N`:
- candidates are the directed simple cycles through all N nodes (rustworkx `simple_cycles` over every edge);
  EXO takes the first that wins its ranking, and every such cycle holds the same nodes, so which one depends
  only on the order rustworkx lists them (the order edges were added, which /state does not show);
- MlxRing: each rank needs a socket edge to its left and right neighbour (`get_mlx_ring_hosts_by_node`, else
  "MLX ring backend requires connectivity between neighbouring nodes"). The rule passes when such a cycle
  exists and every cycle EXO could pick has both; a cycle over a one-way link is a failure naming it (EXO
  may pick it, depending on an order no API shows). One node: always placeable.
- MlxJaccl: an RDMA edge for every ordered pair (`get_mlx_jaccl_devices_matrix`), RDMA enabled on every node
  where /state reports it (`nodeRdmaCtl`, NEW), and a socket edge from every node to rank 0, which can be
  any node: so a socket edge for every ordered pair.
Pairs with no link that no candidate cycle needs are notes, never failures.
`tests_selftest/unit/exo/test_placement_rule.py` holds the rule to EXO's own `place_instance` on every directed
graph of 2 to 4 nodes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations, permutations

from modeldrop.exo.state import Topology

Pair = tuple[str, str]


@dataclass(frozen=True)
class LinkRule:
    """The verdict of the rule: `ring` is one cycle EXO can use (rank order), `missing_links` the node-name pairs
    whose link (both ways) would make it placeable, `one_way` the links ("a → b") with no edge back that block it."""

    ok: bool
    problem: str = ""
    notes: tuple[str, ...] = ()
    ring: tuple[str, ...] = ()
    missing_links: tuple[str, ...] = ()
    one_way: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)


def directed_cycles(nodes: Sequence[str], edges: frozenset[Pair] | set[Pair]) -> Iterator[tuple[str, ...]]:
    """Every directed simple cycle through all of `nodes` (first node fixed, so each cycle once)."""
    if len(nodes) < 2:
        return
    first, rest = nodes[0], list(nodes[1:])
    for order in permutations(rest):
        cycle = (first, *order)
        if all((cycle[i], cycle[(i + 1) % len(cycle)]) in edges for i in range(len(cycle))):
            yield cycle


def _blocking_pairs(cycle: tuple[str, ...], socket: frozenset[Pair] | set[Pair]) -> list[Pair]:
    """The neighbour pairs of `cycle` with no socket edge (rank -> left and rank -> right, as EXO looks them up)."""
    n = len(cycle)
    need = [(cycle[i], cycle[(i + d) % n]) for i in range(n) for d in (-1, 1)]
    return [p for p in dict.fromkeys(need) if p not in socket]


def _link(names: Mapping[str, str], a: str, b: str, sep: str = "–") -> str:
    return f"{names.get(a, a[:12])}{sep}{names.get(b, b[:12])}"


def _ring_ok(nodes: Sequence[str], edges: frozenset[Pair] | set[Pair], socket: frozenset[Pair] | set[Pair]) -> bool:
    cycles = list(directed_cycles(nodes, edges))
    return bool(cycles) and all(not _blocking_pairs(c, socket) for c in cycles)


def _unlinked_pairs(nodes: Sequence[str], socket: frozenset[Pair] | set[Pair]) -> list[Pair]:
    return [(a, b) for a, b in combinations(nodes, 2) if (a, b) not in socket or (b, a) not in socket]


def mlx_ring_rule(nodes: Sequence[str], topo: Topology, names: Mapping[str, str]) -> LinkRule:
    """MlxRing over all `nodes` (see the module docstring)."""
    nodes = list(nodes)
    if len(nodes) < 2:
        return LinkRule(True, ring=tuple(nodes))
    edges, socket = set(topo.edges), set(topo.socket)
    cycles = list(directed_cycles(nodes, edges))
    bad = {c: _blocking_pairs(c, socket) for c in cycles}
    unlinked = _unlinked_pairs(nodes, socket)
    good = [c for c in cycles if not bad[c]]
    if good and len(good) == len(cycles):
        ring = good[0]
        used = {frozenset((ring[i], ring[(i + 1) % len(ring)])) for i in range(len(ring))}
        notes = tuple(f"no link {_link(names, a, b)} (not needed: a ring runs "
                      f"{' → '.join(names.get(x, x[:12]) for x in (*ring, ring[0]))})"
                      for a, b in unlinked if frozenset((a, b)) not in used)
        return LinkRule(True, notes=notes, ring=ring)
    if cycles:
        missing_dir = sorted({p for c in cycles for p in bad[c]})
        links = tuple(_link(names, b, a, " → ") for a, b in missing_dir)
        why = "; ".join(f"{_link(names, b, a, ' → ')} only: {names.get(a, a[:12])} cannot reach "
                        f"{names.get(b, b[:12])}'s API" for a, b in missing_dir)
        return LinkRule(False, f"a ring through all {len(nodes)} nodes runs over a one-way link ({why}); EXO may "
                               "place the ring over it and fail with 'MLX ring backend requires connectivity "
                               "between neighbouring nodes'", one_way=links,
                        details={"cycles": [list(c) for c in cycles]})
    closing = [p for p in unlinked if _ring_ok(nodes, edges | {p, p[::-1]}, socket | {p, p[::-1]})]
    missing = tuple(_link(names, a, b) for a, b in (closing or unlinked))
    said = ", ".join(_half(names, a, b, edges) for a, b in (closing or unlinked))
    what = "missing link that would close it" if len(closing) == 1 else (
        "missing links, any one of which would close it" if closing else "pairs not linked both ways")
    return LinkRule(False, f"no ring through all {len(nodes)} nodes in the topology: EXO cannot place an MlxRing "
                           f"instance over them ({what}: {said})", missing_links=missing)


def _half(names: Mapping[str, str], a: str, b: str, edges: frozenset[Pair] | set[Pair]) -> str:
    """A missing link as said to the operator: which way, if any, works."""
    link, na, nb = _link(names, a, b), names.get(a, a[:12]), names.get(b, b[:12])
    if (a, b) in edges:
        return f"{link} [one-way: {nb} cannot reach {na}'s API]"
    if (b, a) in edges:
        return f"{link} [one-way: {na} cannot reach {nb}'s API]"
    return link


def mlx_jaccl_rule(nodes: Sequence[str], topo: Topology, names: Mapping[str, str],
                   rdma_ctl: Mapping[str, bool] | None) -> LinkRule:
    """MlxJaccl over all `nodes` (see the module docstring)."""
    nodes = list(nodes)
    if len(nodes) < 2:
        return LinkRule(True, ring=tuple(nodes))
    pairs = [(a, b) for a in nodes for b in nodes if a != b]
    problems = []
    no_rdma = [p for p in pairs if p not in topo.rdma]
    no_socket = [p for p in pairs if p not in topo.socket]
    if no_rdma:
        problems.append("no RDMA link " + ", ".join(_link(names, a, b, " → ") for a, b in no_rdma)
                        + " (MlxJaccl needs RDMA between every pair)")
    if rdma_ctl is not None:
        off = [n for n in nodes if not rdma_ctl.get(n)]
        if off:
            problems.append("RDMA not enabled (nodeRdmaCtl) on " + ", ".join(names.get(n, n[:12]) for n in off))
    if no_socket:
        problems.append("no socket link " + ", ".join(_link(names, a, b, " → ") for a, b in no_socket)
                        + " (every node must reach rank 0, which can be any node)")
    if problems:
        missing = tuple(dict.fromkeys(_link(names, *sorted((a, b))) for a, b in no_rdma + no_socket))
        return LinkRule(False, "EXO cannot place an MlxJaccl instance over all nodes: " + "; ".join(problems),
                        missing_links=missing)
    return LinkRule(True, ring=tuple(nodes))


def ring_rule(nodes: Sequence[str], topo: Topology, meta: str, names: Mapping[str, str],
              rdma_ctl: Mapping[str, bool] | None = None) -> LinkRule:
    """The rule for `meta` (MlxRing, MlxJaccl) over all `nodes`; `names` maps node ids to the configured names."""
    if meta == "MlxJaccl":
        return mlx_jaccl_rule(nodes, topo, names, rdma_ctl)
    return mlx_ring_rule(nodes, topo, names)

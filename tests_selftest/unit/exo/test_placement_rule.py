"""The cluster gate's rule (modeldrop/exo/placeable.py) and the emulator's placement, held to EXO's own code.

EXO's `place_instance` runs in the real-EXO install (sandbox/exo_real/placement_oracle.py) over the same
topologies, each a directed graph whose edges were added in a known order (EXO's cycle order, and so its rank
order, follows it). Graphs: every directed graph of 2 and 3 nodes and one of each isomorphism class of 4
nodes. The rule must say "placeable" exactly when EXO places MlxRing over all N nodes whatever the edge order:
pass => EXO places for every order tried; no ring => EXO fails for every order; a ring over a one-way link =>
EXO fails for the order that lists that ring's edges first (it is the first cycle rustworkx finds).
The emulator's cycle order is held to rustworkx itself and its placement (rank order, ring hosts) to EXO's.
Skipped where real EXO is not installed (the rustworkx check needs only the dev extra).
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
from collections.abc import Iterator

import pytest

from modeldrop.exo.placeable import directed_cycles, ring_rule
from modeldrop.exo.state import Topology
from sandbox.exo_emulator.cycles import simple_cycles
from sandbox.exo_emulator.placement import place
from sandbox.exo_emulator.state import State
from sandbox.exo_real.install import current
from tests_selftest.support import REPO

GB = 1024**3
Graph = tuple[list[str], list[tuple[str, str]]]


def nodes_of(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


def all_graphs(n: int) -> Iterator[list[tuple[str, str]]]:
    """Every directed graph on `nodes_of(n)` (edges in pair order)."""
    pairs = [(a, b) for a in nodes_of(n) for b in nodes_of(n) if a != b]
    for mask in range(1 << len(pairs)):
        yield [p for i, p in enumerate(pairs) if mask >> i & 1]


def iso_classes(n: int) -> list[list[tuple[str, str]]]:
    """One directed graph on `nodes_of(n)` per isomorphism class."""
    nodes = nodes_of(n)
    seen, out = set(), []
    for edges in all_graphs(n):
        forms = [frozenset((p[nodes.index(a)], p[nodes.index(b)]) for a, b in edges)
                 for p in itertools.permutations(nodes)]
        key = min(tuple(sorted(f)) for f in forms)
        if key not in seen:
            seen.add(key)
            out.append(edges)
    return out


def topo(nodes: list[str], socket: list[tuple[str, str]], rdma: list[tuple[str, str]] = ()) -> Topology:
    return Topology(frozenset(nodes), frozenset([*socket, *rdma]), "adjacency", frozenset(socket), frozenset(rdma))


@pytest.fixture(scope="module")
def exo_place():
    """`exo_place(cases)`: EXO's own placement of each case (placement_oracle.py's contract), one EXO process
    for the module."""
    install = current("new")
    if install is None:
        pytest.skip("real EXO is not installed here (python -m sandbox.exo_real build)")
    proc = subprocess.Popen([str(install.python), str(REPO / "sandbox/exo_real/placement_oracle.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**install.env, "PATH": "/usr/bin:/bin"})

    def run(cases: list[dict]) -> list[dict]:
        out = []
        for c in cases:
            proc.stdin.write(json.dumps(c) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            assert line, f"the placement oracle exited ({proc.poll()})"
            out.append(json.loads(line))
        return out
    yield run
    proc.stdin.close()
    proc.wait(timeout=30)


def case(nodes: list[str], edges: list[tuple[str, str, str]], meta: str = "MlxRing") -> dict:
    return {"nodes": nodes, "edges": [list(e) for e in edges], "meta": meta, "sharding": "Pipeline",
            "min_nodes": len(nodes), "rdma_ctl": True}


def adversarial(nodes: list[str], edges: list[tuple[str, str]], cycle: tuple[str, ...]) -> list[tuple[str, str]]:
    """`edges` with `cycle`'s edges first, in cycle order: rustworkx then finds that cycle first (its DFS follows
    each node's oldest edge), so EXO places over it."""
    first = [(cycle[i], cycle[(i + 1) % len(cycle)]) for i in range(len(cycle))]
    return first + [e for e in edges if e not in first]


def test_ring_rule_is_exos_placement(exo_place):
    """MlxRing over all N nodes, for every graph of 2-3 nodes and every 4-node class (see the module docstring)."""
    graphs = [(nodes_of(n), g) for n in (2, 3) for g in all_graphs(n)] + [(nodes_of(4), g) for g in iso_classes(4)]
    cases, index = [], []
    for i, (nodes, edges) in enumerate(graphs):
        rule = ring_rule(nodes, topo(nodes, edges), "MlxRing", {})
        orders = [edges, edges[::-1]]
        if rule.one_way:
            bad = next(c for c in directed_cycles(nodes, set(edges))
                       if any((c[j], c[j - 1]) not in edges or (c[j], c[(j + 1) % len(c)]) not in edges
                              for j in range(len(c))))
            orders = [adversarial(nodes, edges, bad)]
        for order in orders:
            cases.append(case(nodes, [(a, b, "socket") for a, b in order]))
            index.append((i, rule))
    answers = exo_place(cases)
    tally: dict[str, int] = {}
    for (i, rule), c, ans in zip(index, cases, answers, strict=True):
        kind = "placeable" if rule.ok else "one-way" if rule.one_way else "no ring"
        tally[kind] = tally.get(kind, 0) + 1
        assert ans["ok"] == rule.ok, (kind, graphs[i], c["edges"], ans, rule.problem)
        if ans["ok"]:  # the rule's ring is one EXO could use: every rank has both neighbours' addresses
            assert all(len([h for h in hs if not h.startswith(("0.0.0.0", "198.51.100.1"))]) == min(2, len(hs) - 1)
                       for hs in ans["hosts_by_node"].values()), ans
    assert min(tally.values()) > 0 and len(tally) == 3, tally


def test_ring_rule_names_the_missing_cable():
    """Four Macs on a Thunderbolt ring: placeable with the diagonals missing (a note); with cable 4-1 out (a
    path) the rule names that one link by node name."""
    nodes = nodes_of(4)
    names = {n: f"node{n[1:]}" for n in nodes}
    ring = [(a, b) for i, a in enumerate(nodes) for b in (nodes[i - 1], nodes[(i + 1) % 4])]
    ok = ring_rule(nodes, topo(nodes, ring), "MlxRing", names)
    assert ok.ok and sorted(ok.notes) == [
        "no link node1–node3 (not needed: a ring runs node1 → node2 → node3 → node4 → node1)",
        "no link node2–node4 (not needed: a ring runs node1 → node2 → node3 → node4 → node1)"], ok.notes
    path = [e for e in ring if set(e) != {"n1", "n4"}]
    cut = ring_rule(nodes, topo(nodes, path), "MlxRing", names)
    assert not cut.ok and cut.missing_links == ("node1–node4",), cut
    assert "missing link that would close it: node1–node4" in cut.problem, cut.problem
    one_way = ring_rule(nodes, topo(nodes, [*path, ("n4", "n1")]), "MlxRing", names)
    assert not one_way.ok and one_way.one_way == ("node4 → node1",) and "one-way" in one_way.problem, one_way
    assert ring_rule(nodes[:1], topo(nodes[:1], []), "MlxRing", names).ok


def jaccl_graphs() -> Iterator[Graph]:
    """2 nodes: every mix of socket/RDMA edges; 3 and 4 nodes: all-to-all and each single edge taken out."""
    for n in (2, 3, 4):
        nodes = nodes_of(n)
        pairs = [(a, b) for a in nodes for b in nodes if a != b]
        full = [(a, b, k) for a, b in pairs for k in ("socket", "rdma")]
        if n == 2:
            for combo in itertools.product(range(4), repeat=len(pairs)):
                yield nodes, [(a, b, k) for (a, b), c in zip(pairs, combo, strict=True)
                              for k, bit in (("socket", 1), ("rdma", 2)) if c & bit]
            continue
        yield nodes, full
        for drop in full[:: (1 if n == 3 else 3)]:
            yield nodes, [e for e in full if e != drop]


def rank0_order(nodes: list[str], edges: list[tuple[str, str, str]], want: str, rng: random.Random
                ) -> tuple[list[str], list[tuple[str, str, str]]]:
    """A node and edge order in which EXO's first cycle through every node (its rank order) starts at `want`,
    found with the emulator's copy of rustworkx's order (held to rustworkx below)."""
    for _ in range(500):
        order, node_order = list(edges), list(nodes)
        rng.shuffle(order)
        rng.shuffle(node_order)
        first = next(c for c in simple_cycles(node_order, [(a, b) for a, b, _ in order]) if len(c) == len(nodes))
        if first[0] == want:
            return node_order, order
    raise AssertionError(f"no order found with {want} as rank 0")


def test_jaccl_rule_is_exos_placement(exo_place):
    """MlxJaccl: placeable by the rule => EXO places it for every node and edge order tried; not placeable =>
    EXO fails too, for the order that makes rank 0 a node some other node has no socket link to (every node
    must reach rank 0, and which node that is depends on the order)."""
    rng = random.Random(20)
    cases, index = [], []
    for i, (nodes, edges) in enumerate(jaccl_graphs()):
        sock = [(a, b) for a, b, k in edges if k == "socket"]
        rdma = [(a, b) for a, b, k in edges if k == "rdma"]
        for ctl in (True, False) if i % 5 == 0 else (True,):
            rule = ring_rule(nodes, topo(nodes, sock, rdma), "MlxJaccl", {}, {n: ctl for n in nodes})
            orders = []
            if rule.ok or set(rdma) != {(a, b) for a in nodes for b in nodes if a != b} or not ctl:
                for shift in range(len(nodes) if rule.ok else 1):
                    order = list(edges)
                    rng.shuffle(order)
                    orders.append((nodes[shift:] + nodes[:shift], order))
            else:  # only a socket link to some node is missing: EXO fails when that node is rank 0
                unreached = next(b for a in nodes for b in nodes if a != b and (a, b) not in sock)
                orders.append(rank0_order(nodes, edges, unreached, rng))
            for node_order, order in orders:
                cases.append(dict(case(node_order, order, "MlxJaccl"), rdma_ctl=ctl))
                index.append((i, rule))
    answers = exo_place(cases)
    tally = {True: 0, False: 0}
    for (i, rule), c, ans in zip(index, cases, answers, strict=True):
        assert ans["ok"] == rule.ok, (i, c, ans, rule.problem)
        tally[rule.ok] += 1
    assert min(tally.values()) > 0, tally


def test_emulator_cycle_order_is_rustworkx():
    """The emulator's cycles (cycles.py) are rustworkx's, in order and rotation, on every directed graph of 2-3
    nodes and every 4-node class, edges in three orders, a repeated edge in one."""
    rx = pytest.importorskip("rustworkx")
    rng = random.Random(4)
    graphs = [(nodes_of(n), g) for n in (2, 3) for g in all_graphs(n)] + [(nodes_of(4), g) for g in iso_classes(4)]
    for nodes, edges in graphs:
        for t in range(3):
            order = list(edges)
            rng.shuffle(order)
            if t == 2 and order:
                order.append(rng.choice(order))
            g = rx.PyDiGraph()
            idx = {n: g.add_node(n) for n in nodes}
            for a, b in order:
                g.add_edge(idx[a], idx[b], None)
            want = [[nodes[v] for v in c] for c in rx.simple_cycles(g)] + [[n] for n in nodes]
            assert simple_cycles(nodes, order) == want, (nodes, order)


def emulator_state(nodes: list[str], edges: list[tuple[str, str]], ips: dict[str, str]) -> dict:
    """The emulator's replicated state after these nodes joined and these edges were probed, in order."""
    s = State()
    for nid in nodes:
        s.apply(0, {"type": "NodeInfo", "nodeId": nid, "memory": {"ramAvailable": {"inBytes": 8 * GB}},
                    "network": {"interfaces": [{"name": "en0", "ipAddress": ips[nid], "interfaceType": "unknown"}]},
                    "backends": ["MlxCpu"], "rdmaCtl": {"enabled": False}})
    for a, b in edges:
        ip = ips[b]
        s.apply(1, {"type": "EdgeCreated", "source": a, "sink": b, "edge": {"sinkMultiaddr": {
            "address": f"/ip4/{ip}/tcp/52415", "address_type": "ip4", "ip_address": ip, "port": 52415}}})
    return s.data


CARD = {"model_id": "modeldrop/oracle", "n_layers": 8, "hidden_size": 64, "supports_tensor": True,
        "storage_size": {"in_bytes": GB}, "backends": ["MlxCpu", "MlxMetal"], "num_key_value_heads": None}


def rank_topologies() -> Iterator[Graph]:
    """3 and 4 nodes: full mesh and ring (both ways), edges in several orders, plus strongly connected
    random graphs of both-way links."""
    rng = random.Random(7)
    for n in (3, 4):
        nodes = nodes_of(n)
        mesh = [(a, b) for a in nodes for b in nodes if a != b]
        ring = [(a, b) for i, a in enumerate(nodes) for b in (nodes[i - 1], nodes[(i + 1) % n])]
        for edges in (mesh, ring):
            for _ in range(6):
                order = list(edges)
                rng.shuffle(order)
                yield nodes, order
    for _ in range(20):
        nodes = nodes_of(4)
        pairs = [p for p in itertools.combinations(nodes, 2) if rng.random() < 0.7]
        edges = [e for a, b in pairs for e in ((a, b), (b, a))]
        rng.shuffle(edges)
        if any(True for _ in directed_cycles(nodes, set(edges))):
            yield nodes, edges


def test_emulator_ranks_3_and_4_nodes_as_exo(exo_place):
    """The emulator's placement over the same topologies, edges added in the same order, gives every node the
    rank EXO's `place_instance` gives it, and the same neighbour addresses in its ring hosts."""
    topologies = list(rank_topologies())
    ips = {f"n{i}": f"10.0.0.{i}" for i in range(1, 5)}
    cases = [dict(case(nodes, [(a, b, "socket") for a, b in edges]), ips=ips) for nodes, edges in topologies]
    answers = exo_place(cases)
    for (nodes, edges), ans in zip(topologies, answers, strict=True):
        assert ans["ok"], (nodes, edges, ans)
        body = place(emulator_state(nodes, edges, ips), CARD, "Pipeline", "MlxRing", len(nodes), "new")
        inst = body["MlxRingInstance"]
        shards = inst["shardAssignments"]
        rank = {nid: next(iter(shards["runnerToShard"][rid].values()))["deviceRank"]
                for nid, rid in shards["nodeToRunner"].items()}
        assert sorted(rank, key=rank.get) == ans["ranks"], (nodes, edges, ans["ranks"], rank)
        hosts = {nid: [h["ip"] if h["port"] else "placeholder" for h in hs] for nid, hs in inst["hostsByNode"].items()}
        want = {nid: [h.rsplit(":", 1)[0] if not h.endswith(":0") else "placeholder" for h in hs]
                for nid, hs in ans["hosts_by_node"].items()}
        assert hosts == want, (nodes, edges, hosts, want)

"""EXO's `Topology.get_cycles()` in the order rustworkx 0.17 gives it, without rustworkx.

Contract: `simple_cycles(nodes, edges)` lists every simple directed cycle of the graph whose nodes were added
in the order `nodes` and whose edges (source, sink) in the order `edges`, in exactly the order and rotation
`rustworkx.simple_cycles` yields them for that graph (Johnson's algorithm as rustworkx-core writes it, over
petgraph's Kosaraju SCCs), then one singleton per node in node order, as EXO appends them. EXO's placement
takes the first cycle that wins its ranking, and rank order is the cycle's order, so this decides which node
is rank 0 and who neighbours whom. Orders that matter:
- petgraph walks a node's edges newest first (`neighbors`, `neighbors_directed`), duplicates included;
- rustworkx collects a node's neighbours into an IndexSet (first occurrence kept) and pops from its end;
- SCCs come from Kosaraju: a post-order over the reversed graph in node-index order, then DFS from the
  last-finished node; Johnson takes the last SCC and, within it, its last node as the start;
- each SCC's subgraph keeps the original relative order of nodes and edges.
`tests_selftest/unit/exo/test_placement_rule.py` holds this to rustworkx itself on every directed graph of 2 to 4
nodes. A node or edge deleted and re-added may take a freed index in rustworkx's StableGraph; that reuse is
not modelled (edges keep their insertion order).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

Edge = tuple[Hashable, Hashable]


class _Graph:
    """Nodes 0..n-1 and edges in insertion order; `out(v)` / `inc(v)` newest first, as petgraph's lists."""

    def __init__(self, n: int, edges: Sequence[tuple[int, int]]) -> None:
        self.n = n
        self.edges = list(edges)
        self.alive = set(range(n))

    def out(self, v: int) -> list[int]:
        return [b for a, b in reversed(self.edges) if a == v and b in self.alive]

    def inc(self, v: int) -> list[int]:
        return [a for a, b in reversed(self.edges) if b == v and a in self.alive]

    def remove(self, v: int) -> None:
        self.alive.discard(v)
        self.edges = [(a, b) for a, b in self.edges if a != v and b != v]


def _kosaraju(g: _Graph) -> list[list[int]]:
    """petgraph's `kosaraju_scc`: SCCs in its order, each in its DFS discovery order."""
    discovered, finished, finish = set(), set(), []
    for i in sorted(g.alive):
        if i in discovered:
            continue
        stack = [i]
        while stack:  # DfsPostOrder over the reversed graph
            nx = stack[-1]
            if nx not in discovered:
                discovered.add(nx)
                stack.extend(s for s in g.inc(nx) if s not in discovered)
            else:
                stack.pop()
                if nx not in finished:
                    finished.add(nx)
                    finish.append(nx)
    seen: set[int] = set()
    sccs = []
    for i in reversed(finish):
        if i in seen:
            continue
        stack, scc = [i], []
        while stack:  # Dfs over the graph
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(s for s in g.out(node) if s not in seen)
                scc.append(node)
        sccs.append(scc)
    return sccs


def _neighbour_stack(g: _Graph, v: int) -> list[int]:
    """rustworkx's IndexSet of v's neighbours (first occurrence of petgraph's newest-first walk); popped from
    the end."""
    return list(dict.fromkeys(g.out(v)))


def _subgraph(g: _Graph, nodes: list[int]) -> tuple[_Graph, list[int]]:
    """The subgraph on `nodes` (original relative order of nodes and edges) and its index -> original index."""
    keep = sorted(nodes)
    index = {v: i for i, v in enumerate(keep)}
    return _Graph(len(keep), [(index[a], index[b]) for a, b in g.edges if a in index and b in index]), keep


def _unblock(node: int, blocked: set[int], block: dict[int, set[int]]) -> None:
    stack = {node}
    while stack:
        v = stack.pop()
        if v in blocked:
            blocked.discard(v)
            stack |= block.pop(v, set())


def _cycles_from(sub: _Graph, start: int, back: list[int]) -> list[list[int]]:
    """Johnson's search from `start` in `sub` (rustworkx-core's process_stack), cycles in original indices."""
    out: list[list[int]] = []
    path, blocked, closed = [start], {start}, set()
    block: dict[int, set[int]] = {}
    stack = [(start, _neighbour_stack(sub, start))]
    while stack:
        this, nbrs = stack[-1]
        if nbrs:
            nxt = nbrs.pop()
            if nxt == start:
                out.append([back[v] for v in path])
                closed.update(path)
            elif nxt not in blocked:
                blocked.add(nxt)
                path.append(nxt)
                stack.append((nxt, _neighbour_stack(sub, nxt)))
                closed.discard(nxt)
                continue
        if not nbrs:
            if this in closed:
                _unblock(this, blocked, block)
            else:
                for w in sub.out(this):
                    block.setdefault(w, set()).add(this)
            stack.pop()
            path.pop()
    return out


def _johnson(g: _Graph) -> list[list[int]]:
    sccs = [c for c in _kosaraju(g) if len(c) > 1]
    out: list[list[int]] = []
    while sccs:
        scc = sccs.pop()
        sub, back = _subgraph(g, scc)
        start = back.index(scc[-1])
        out += _cycles_from(sub, start, back)
        sub.remove(start)
        sccs += [[back[v] for v in c] for c in _kosaraju(sub) if len(c) > 1]
    return out


def simple_cycles(nodes: Sequence[Hashable], edges: Sequence[Edge]) -> list[list[Hashable]]:
    """See the module docstring: rustworkx's simple cycles, then EXO's singletons."""
    index = {n: i for i, n in enumerate(nodes)}
    g = _Graph(len(nodes), [(index[a], index[b]) for a, b in edges if a in index and b in index and a != b])
    return [[nodes[v] for v in c] for c in _johnson(g)] + [[n] for n in nodes]

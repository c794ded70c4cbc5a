"""Collection of a gate run: per-node parametrization, gate keywords, the gate order and timeouts."""

from __future__ import annotations

import pytest

from modeldrop import gatetable
from modeldrop.deadlines import BENCH_CASE_TIMEOUT_S
from modeldrop.plugin.bounds import bound
from modeldrop.plugin.keywords import k_expressions
from modeldrop.plugin.session import GateSession, gate_id


def per_node_ks(metafunc: pytest.Metafunc, n_nodes: int) -> list[int] | None:
    """The node numbers a per-node gate runs for (per_node_from..N), or None for other tests."""
    m = metafunc.definition.get_closest_marker("gate")
    if m is None or m.kwargs.get("per_node_from") is None or "k" not in metafunc.fixturenames:
        return None
    return list(range(int(m.kwargs["per_node_from"]), n_nodes + 1))


def label_items(items: list[pytest.Item]) -> None:
    """Gate ids become `-k` keywords and a `gate` user property; benchmarks get a `bench` property."""
    for item in items:
        gate = gate_id(item)
        if gate:
            item.extra_keyword_matches.add(gate)
            item.user_properties.append(("gate", gate))
        elif item.get_closest_marker("bench") is not None:
            item.user_properties.append(("bench", item.name))


def drop_inactive(gs: GateSession, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect gates outside the run's order; record each gate's exact `-k` expression."""
    gated = [it for it in items if it.get_closest_marker("gate")]
    dropped = [it for it in gated if gate_id(it) not in set(gs.order)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        keep = set(map(id, dropped))
        items[:] = [it for it in items if id(it) not in keep]
    gs.ledger.k_expressions(k_expressions([it for it in items if gate_id(it)], gate_id))


def order_selected(gs: GateSession, items: list[pytest.Item]) -> None:
    """Sort by the gate order, count selected items per gate, add the table's default timeouts (benchmark
    cases: theirs)."""
    index = {g: i for i, g in enumerate(gs.order)}

    def key(pair: tuple[int, pytest.Item]) -> tuple[int, int, int]:
        i, item = pair
        g = gate_id(item)
        return (0, index[g], i) if g in index else (1, 0, i)

    items[:] = [it for _, it in sorted(enumerate(items), key=key)]
    gs.selected = {}
    for item in items:
        g = gate_id(item)
        if g is None:
            bound(item, BENCH_CASE_TIMEOUT_S if item.get_closest_marker("bench") else None)
            continue
        gs.selected[g] = gs.selected.get(g, 0) + 1
        row = gatetable.gate_of(g)
        bound(item, gatetable.timeout_of(g), row.kind if row else None)
    bench_only = not gs.selected and any(it.get_closest_marker("bench") for it in items)
    gs.ledger.deselect([g for g in gs.order if g not in gs.selected], bench_only=bench_only)

"""`-k` expressions that select exactly one gate's items, for printed rerun commands.

pytest's `-k WORD` keeps an item when WORD is a case-insensitive substring of one of its keyword
names: the names of the item and its parents, its extra keywords (the plugin adds the gate id),
its function's attributes and its markers' names. The names are gathered here with pytest's public
item API (a superset is safe: it can only add an unneeded `and not` term); \
a gate id that is a substring of another gate's names (e.g. `cluster` in a path) gets
`and not <other gate>` terms until only its own items match.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest


def keyword_names(item: pytest.Item) -> set[str]:
    """The names pytest's `-k` matches against for `item` (lower-cased)."""
    names = {node.name for node in item.listchain() if not isinstance(node, pytest.Session)
             and not (isinstance(node, pytest.Directory) and isinstance(node.parent, pytest.Session))}
    names.update(item.listextrakeywords())
    function = getattr(item, "function", None)
    if function is not None:  # a superset of what pytest matches only adds harmless `and not` terms
        names.update(n for n in function.__dict__ if not n.startswith("_"))
    names.update(mark.name for mark in item.iter_markers())
    return {n.lower() for n in names}


def _matches(names: set[str], include: str, exclude: list[str]) -> bool:
    """Does `include and not e1 and not e2 …` select an item with these keyword names?"""
    def has(word: str) -> bool:
        return any(word.lower() in n for n in names)
    return has(include) and not any(has(e) for e in exclude)


def k_expressions(items: list[pytest.Item], gate_of: Callable[[pytest.Item], str | None]) -> dict[str, str]:
    """For each gate, a `-k` expression selecting exactly its items (the id, plus `and not …` if needed)."""
    named = [(gate_of(it), keyword_names(it)) for it in items]
    gates = {g for g, _ in named if g}
    out: dict[str, str] = {}
    for gate in gates:
        exclude: list[str] = []
        for _ in range(len(gates)):
            intruders = sorted({g for g, names in named if g and g != gate and _matches(names, gate, exclude)})
            new = [g for g in intruders if g not in exclude]
            if not new:
                break
            exclude += new
        out[gate] = gate + "".join(f" and not {g}" for g in exclude)
    return out

"""Per-node work on every node at once: one thread per node, each node's connection used by one thread at a time.

The guide orders downloads and EXO starts; everything else a gate asks of each node (probes, manifests,
log and socket reads, requests through each API) runs on all nodes at once, so N nodes cost about
what one does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def each(ks: Iterable[int], fn: Callable[[int], T]) -> dict[int, T]:
    """`fn(k)` for every k at once, one thread per node; {k: result} in the order of `ks`. The first error (in
    that order) is raised once every call ended, so no node's work is left running behind it."""
    ks = list(ks)
    if len(ks) <= 1:
        return {k: fn(k) for k in ks}
    with ThreadPoolExecutor(max_workers=len(ks), thread_name_prefix="node") as pool:
        futures = {k: pool.submit(fn, k) for k in ks}
    return {k: f.result() for k, f in futures.items()}


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Each call at once, one thread each; their results in order (errors as in `each`)."""
    return list(each(range(len(calls)), lambda i: calls[i]()).values())

"""The logger registry made safe to iterate while other threads create loggers.

pytest's logging plugin attaches its handlers to every non-propagating logger by iterating
`logging.Logger.manager.loggerDict.values()` without logging's lock, at the start of every test phase.
A run's own threads create loggers meanwhile (a benchmark's first plot imports matplotlib and PIL, a
node's first SSH transport creates paramiko's), and the iteration then raised "dictionary changed
size during iteration" in a gate's setup or teardown: a healthy gate reported as an error.

`install()` swaps the registry for a dict whose views are snapshots taken under logging's lock: the same
keys and loggers, so logging itself (which always writes under that lock) is unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

_LOCK = logging._lock  # type: ignore[attr-defined]  # logging's module lock: held by getLogger while it inserts


class SnapshotDict(dict[str, Any]):
    """A dict whose keys(), values() and items() are lists copied under logging's lock."""

    def keys(self) -> list[str]:  # type: ignore[override]
        with _LOCK:
            return list(super().keys())

    def values(self) -> list[Any]:  # type: ignore[override]
        with _LOCK:
            return list(super().values())

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        with _LOCK:
            return list(super().items())

    def __iter__(self) -> Any:
        return iter(self.keys())


def install() -> None:
    """Make `logging.Logger.manager.loggerDict` a SnapshotDict (idempotent; keeps every logger)."""
    manager = logging.Logger.manager
    with _LOCK:
        if not isinstance(manager.loggerDict, SnapshotDict):
            manager.loggerDict = SnapshotDict(manager.loggerDict)

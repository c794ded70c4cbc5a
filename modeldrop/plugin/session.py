"""The handles of one gate run and the accessors fixtures use to reach it.

`GateSession` lives on `config.stash[SESSION_KEY]` for a gate run (None in self-tests). It keeps the
configuration, run folder, ledger, pass cache, order and the count of selected items per gate; every
gate outcome lives in the ledger (`modeldrop.ledger.Ledger`), which the plugin records it through and
fixtures, benchmarks and the run summary read it from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modeldrop.config import RunConfig
from modeldrop.facts import RunFacts
from modeldrop.ledger import Evidence, Ledger
from modeldrop.ledger.passcache import PassCache
from modeldrop.ledger.runfolder import RunFolder
from modeldrop.nodepool import NodePool


@dataclass
class GateSession:
    """Everything the plugin keeps for one gate run (outcomes are the ledger's)."""

    cfg: RunConfig
    folder: RunFolder
    ledger: Ledger
    cache: PassCache
    order: list[str]
    secrets: list[str]
    facts: Any = None
    pool: Any = None
    selected: dict[str, int] = field(default_factory=dict)  # gate -> number of selected items
    parts: dict[str, dict] = field(default_factory=dict)   # gate -> fingerprint parts last computed
    html_report: Any = None
    exo_api: list = field(default_factory=list)  # --exo-api: modeldrop.exo.serving_check.ServingCheck per URL
    scratch: Path | None = None  # --collect-only: the temporary reports dir, removed when the session ends

    def outcome_of(self, gate: str) -> str | None:
        """passed / failed / skipped / reused for a gate finished in this session, else None (the ledger's)."""
        return self.ledger.outcome(gate)

    def failed_gates(self) -> list[str]:
        """Gates with a failed item in this session (the ledger's; known as soon as the item's phase fails)."""
        return self.ledger.failed_gates()


SESSION_KEY = pytest.StashKey[GateSession]()
FACTS_KEY = pytest.StashKey[Any]()          # tests may inject a fake facts object here
POOL_KEY = pytest.StashKey[Any]()
EVIDENCE_KEY = pytest.StashKey[Any]()       # per item


def session_of(config: pytest.Config) -> GateSession | None:
    """The gate-run state, or None (self-tests)."""
    return config.stash.get(SESSION_KEY, None)


def _of(config: pytest.Config, attr: str) -> Any:
    gs = session_of(config)
    return getattr(gs, attr) if gs else None


def run_config_of(config: pytest.Config) -> RunConfig | None:
    """The validated RunConfig of a gate run, else None."""
    return _of(config, "cfg")


def run_folder_of(config: pytest.Config) -> RunFolder | None:
    """This run's folder, else None."""
    return _of(config, "folder")


def ledger_of(config: pytest.Config) -> Ledger | None:
    """This run's Ledger, else None."""
    return _of(config, "ledger")


def pass_cache_of(config: pytest.Config) -> PassCache | None:
    """The reports dir's PassCache, else None."""
    return _of(config, "cache")


def _lazy(config: pytest.Config, attr: str, key: Any, make: Any) -> Any:
    """The session's `attr`: created on first use from what a test put on `config.stash[key]`, else by
    `make(session, config)`."""
    gs = session_of(config)
    if gs is None:
        raise RuntimeError(f"no gate run: {attr} unavailable")
    if getattr(gs, attr) is None:
        setattr(gs, attr, config.stash.get(key, None))
    if getattr(gs, attr) is None:
        setattr(gs, attr, make(gs, config))
    return getattr(gs, attr)


def node_pool_of(config: pytest.Config) -> Any:
    """The run's NodePool (created on first use; closed at session end)."""
    def make(gs: GateSession, _config: pytest.Config) -> Any:
        return NodePool(gs.cfg, run_id=gs.folder.run_id)
    return _lazy(config, "pool", POOL_KEY, make)


def facts_of(config: pytest.Config) -> Any:
    """The run's facts (`modeldrop.facts.RunFacts`, or what a test put on `config.stash[FACTS_KEY]`)."""
    def make(gs: GateSession, cfg: pytest.Config) -> Any:
        return RunFacts(gs.cfg, node_pool_of(cfg))
    return _lazy(config, "facts", FACTS_KEY, make)


def gate_id(item: pytest.Item) -> str | None:
    """The gate id of an item (`node2_verify` for a per-node gate with k=2), or None."""
    m = item.get_closest_marker("gate")
    if m is None:
        return None
    name = m.args[0] if m.args else m.kwargs.get("name")
    if not isinstance(name, str):
        return None
    if "{k}" not in name:
        return name
    k = getattr(getattr(item, "callspec", None), "params", {}).get("k")
    return name.format(k=k) if isinstance(k, int) else None


def evidence_for(item: pytest.Item) -> Any:
    """The item's Evidence (created on first use); attached to the report of every phase."""
    ev = item.stash.get(EVIDENCE_KEY, None)
    if ev is None:
        gs = session_of(item.config)
        ev = Evidence(gs.ledger if gs else None, gate_id(item), item.nodeid,
                      gs.folder if gs else None, gs.secrets if gs else ())
        item.stash[EVIDENCE_KEY] = ev
    return ev

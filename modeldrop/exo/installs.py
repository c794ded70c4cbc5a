"""Which exo a node runs: EXO_CMD_NODEk (or EXO_CMD) when set, else the one exo found where exo installs to.

The `facts` probe lists the installs it finds at `EXO_PLACES` (Homebrew on Apple silicon and Intel, EXO.app in
/Applications and ~/Applications, the console-script dirs of uv tool and pipx), once per real path.
`choose(nc, facts, sources)` says which exo node `nc` runs and how it was chosen, or the problem: none found,
or two different ones and nothing to choose between them. `exo_cmd_of(node, nc)` is the path every start, probe
and stop uses (ExoLookupError with that problem when there is none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeldrop.config import NodeConfig
from modeldrop.probes.facts import EXO_PLACES


class ExoLookupError(Exception):
    """No exo to run on a node; the message names the node, the places looked at and the fix."""


@dataclass(frozen=True)
class ExoChoice:
    """The exo a node runs (`path`, None when there is none), how it was chosen, every install found, the problem."""

    path: str | None
    how: str
    found: tuple[dict[str, Any], ...] = ()
    problem: str | None = None

    def line(self, name: str) -> str:
        """`node1: exo /opt/homebrew/bin/exo (found: Homebrew)`, for the preflight summary."""
        return f"{name}: exo {self.path} ({self.how})"


def places_text() -> str:
    """The places looked at, as one clause."""
    return ", ".join(dict.fromkeys(p for p, _ in EXO_PLACES))


def _where(sources: Mapping[str, str], key: str) -> str:
    return f"{key} ({sources[key]})" if key in sources else key


def choose(nc: NodeConfig, facts: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> ExoChoice:
    """The exo node `nc` runs: its configured EXO_CMD_NODEk / EXO_CMD, else the one install the facts found."""
    sources = sources or {}
    found = tuple(facts.get("exo_installs") or ())
    key = f"EXO_CMD_NODE{nc.index}"
    if nc.exo_cmd:
        how = _where(sources, key) if key in sources else _where(sources, "EXO_CMD")
        return ExoChoice(nc.exo_cmd, f"set by {how}", found)
    if not found:
        return ExoChoice(None, "looked up", found,
                         f"{nc.name} ({nc.target}): no {key} (nor EXO_CMD) and no exo where exo installs to "
                         f"({places_text()}); install exo there, or set {key}=<absolute path of exo on that node>")
    if len(found) > 1:
        both = " and ".join(f"{f['path']} ({f['form']}" + (f", -> {f['realpath']})" if f["realpath"] != f["path"]
                                                           else ")") for f in found)
        return ExoChoice(None, "looked up", found,
                         f"{nc.name} ({nc.target}): two different exo installs and no {key} to choose: {both}; set "
                         f"{key} to the one to run (and remove the other: both can be started on that Mac)")
    f = found[0]
    return ExoChoice(f["path"], f"found: {f['form']}, no {key}", found)


def exo_cmd_of(node: Any, nc: NodeConfig, sources: Mapping[str, str] | None = None) -> str:
    """The exo path node `nc` runs (configured, else looked up from the node's cached facts); ExoLookupError when
    there is none to run."""
    if nc.exo_cmd:
        return nc.exo_cmd
    cached = getattr(node, "facts", None)
    facts = cached(timeout=60) if callable(cached) else node.run_probe("facts", {}, timeout=60)
    choice = choose(nc, facts, sources)
    if choice.path is None:
        raise ExoLookupError(choice.problem)
    return choice.path

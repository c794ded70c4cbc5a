"""Gate fingerprints: what a gate's pass depends on, hashed, so a later run can reuse the pass.

Contract:
- `fingerprint_parts(gate, cfg, facts)` returns a JSON-able dict of everything the gate's verdict
  depends on: model id, the node targets and model dirs the gate touches, the options that change
  the verdict for that kind of gate, and the measured facts it rests on (both from the gate table,
  `modeldrop.gatetable.GATES`): hub commit (from the verify gates on), each node's exo version (from
  node1_canary on), node K's manifest digest for nodeK_verify (node1_canary: node 1's; parity: every
  node's). Only facts measured by the time the gate passes are used, so a later run probing afresh
  gets the same parts when nothing changed (an `--audit` holds the row's `audit_facts`). Manifest digests
  cover (path, size, mtime). The parts hold the tool paths the gate runs on the nodes in scope (the row's
  `tools`: HF_CMD, EXO_CMD, the configured python); a row with `tool_versions` (preflight) also the
  versions those tools answer (`tool_versions(k)`, optional on `facts`), and its options the disk margin.
  For gates whose pass is about running exo processes, each node's exo session (`exo_session(k)`,
  optional): the node id its API answers plus the identity (pid, start time, argv) of the exo process from
  its launch record, so a restarted cluster never reuses a pass even if exo's node id becomes persistent.
- `gate_fingerprint(gate, cfg, facts)` is the sha256 of those parts (hex, 24 chars).
- `explain_change(old_parts, new_parts)` names, in words, what differs ("other files on node2
  (manifest changed)"), for the "no reusable pass" diagnostics.
- `facts` is anything with `hub_commit()`, `exo_version(k)`, `manifest_digest(k)` (see `Facts`);
  those may probe nodes (lazily, cached by the facts object). Secrets are never part of the parts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, Protocol

from modeldrop import gatetable
from modeldrop.config import RunConfig, field_of
from modeldrop.pernode import each


class Facts(Protocol):
    """What fingerprints need to know about the world; `modeldrop.facts.RunFacts` implements it."""

    def hub_commit(self) -> str | None: ...

    def exo_version(self, k: int) -> str | None: ...

    def manifest_digest(self, k: int) -> str | None: ...

    # Optional: `exo_session(k) -> str | None`, identifying the exo process running on node k.


def _option_value(cfg: RunConfig, key: str) -> Any:
    """The resolved value of an option as it affects a verdict."""
    if key == "HF_INCLUDE":
        return list(cfg.include)
    if key == "HF_EXCLUDE":
        return list(cfg.exclude)
    if key == "EXO_API_PORT":
        return cfg.api_port
    if key == "EXO_NAMESPACE":
        return cfg.namespace
    return getattr(cfg, field_of(key), None)


def fingerprint_parts(gate: str, cfg: RunConfig, facts: Facts) -> dict[str, Any]:
    """Everything `gate`'s verdict depends on, as a JSON-able dict (see module docstring)."""
    row = gatetable.gate_of(gate)
    k = gatetable.gate_node(gate)
    scope = [k] if k is not None else [n.index for n in cfg.nodes]
    parts: dict[str, Any] = {
        "gate": gate,
        "model_id": cfg.model_id,
        "nodes": {f"node{i}": cfg.node(i).target for i in scope},
        "model_dirs": {f"node{i}": cfg.node(i).model_dir for i in scope},
        "options": {key.lower(): _option_value(cfg, key) for key in (row.options if row else ())},
    }
    if row is not None and row.tools:
        parts["tools"] = {f"node{i}": [getattr(cfg.node(i), t) for t in row.tools] for i in scope}
    wanted = row.facts_for(cfg.audit) if row else gatetable.ALL_FACTS
    if "hub_commit" in wanted:
        parts["hub_commit"] = facts.hub_commit()
    if "exo_versions" in wanted:
        parts["exo_versions"] = per_node(scope, facts.exo_version)
    if "manifests" in wanted:
        parts["manifests"] = per_node(scope, facts.manifest_digest)
    versions = getattr(facts, "tool_versions", None)
    if row is not None and row.tool_versions and callable(versions):
        parts["tool_versions"] = per_node(scope, versions)
    session = getattr(facts, "exo_session", None)
    if row is not None and row.cluster and callable(session):
        parts["exo_sessions"] = per_node(scope, session)
    return parts


def per_node(scope: list[int], fact: Callable[[int], Any]) -> dict[str, Any]:
    """{"nodeK": fact(k)} for every node of the scope, asked of all nodes at once (a fact not yet known is a probe:
    `exo --help`, `hf version`, a manifest)."""
    return {f"node{k}": value for k, value in each(scope, fact).items()}


def digest(parts: dict[str, Any]) -> str:
    """Stable hash of fingerprint parts (sha256 of canonical JSON, 24 hex chars)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def gate_fingerprint(gate: str, cfg: RunConfig, facts: Facts) -> str:
    """The fingerprint of `gate` in this configuration and world."""
    return digest(fingerprint_parts(gate, cfg, facts))


def _short(v: Any) -> str:
    s = "unknown" if v is None else str(v)
    return s[:12] if re.fullmatch(r"[0-9a-f]{13,}", s) else s


def _dict_changes(old: dict, new: dict, what: str) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(what.format(key=key, old=_short(old.get(key)), new=_short(new.get(key))))
    return out


def explain_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Words for what differs between a recorded pass's parts and today's ("other files on node2 …")."""
    if not old:
        return "for a fingerprint recorded without details"
    if old.get("model_id") != new.get("model_id"):
        return f"for another model ({old.get('model_id')})"
    reasons: list[str] = []
    reasons += _dict_changes(old.get("manifests") or {}, new.get("manifests") or {},
                             "for other files on {key} (manifest changed)")
    if old.get("hub_commit") != new.get("hub_commit"):
        reasons.append(f"for hub commit {_short(old.get('hub_commit'))} (now {_short(new.get('hub_commit'))})")
    reasons += _dict_changes(old.get("exo_versions") or {}, new.get("exo_versions") or {},
                             "for exo {old} on {key} (now {new})")
    reasons += _dict_changes(old.get("exo_sessions") or {}, new.get("exo_sessions") or {},
                             "for another exo session on {key} (exo restarted)")
    reasons += _dict_changes(old.get("tools") or {}, new.get("tools") or {},
                             "for tools {old} on {key} (now {new})")
    reasons += _dict_changes(old.get("tool_versions") or {}, new.get("tool_versions") or {},
                             "for tool versions {old} on {key} (now {new})")
    reasons += _dict_changes(old.get("nodes") or {}, new.get("nodes") or {}, "for {key} = {old} (now {new})")
    reasons += _dict_changes(old.get("model_dirs") or {}, new.get("model_dirs") or {},
                             "for model dir {old} on {key} (now {new})")
    reasons += _dict_changes(old.get("options") or {}, new.get("options") or {},
                             "with {key}={old} (now {new})")
    return "; ".join(reasons) if reasons else "for another fingerprint"

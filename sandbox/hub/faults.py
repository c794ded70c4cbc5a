"""The hub's fault switches: one validated set (`Faults`), replaced as a whole, and which one a request meets.

Contract: `Faults.from_json(obj)` validates and normalises a JSON fault set (ValueError naming the bad
key); `take(faults, name, scope, path, client)` is the switch `name` when it applies to that request,
counting down its `times`. A client is `user@address`; a key names it whole, by user or by address.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

SCOPES = ("all", "revision", "tree", "resolve", "head", "get")


@dataclass
class Faults:
    """The fault switches. Empty (all None) means a healthy hub.

    - rate_limit_429: {"scope": one of SCOPES, "retry_after": s, "times": n|None, "clients": [key]|None}
      -> 429 + Retry-After on matching requests (`times` None = every time; `clients` limits it to
      those clients, keys as in node_link_bps). A bare scope string works.
    - server_error_500: same shape -> 500.
    - cut_body: {"patterns": [glob], "fraction": 0.5, "times": n|None} -> a GET of a matching
      path announces the full Content-Length, sends `fraction` of it and closes the connection.
    - stall_body: same shape as cut_body -> a GET of a matching path sends `fraction` of its body, then
      keeps the connection open and silent until the fault is cleared (at most 600 s): a hub that stopped
      answering mid-file.
    - missing_file: [glob] -> listed in the tree, but HEAD/GET answer 404 EntryNotFound.
    - slow_link_bps: bytes per second for GET bodies, one line shared by every client (None = unthrottled).
    - node_link_bps: each client on its own line: an int (the same rate for every client) or
      {client: bps} with "*" for the rest; a client is `user@address`: the user owning the
      connecting socket (each sandbox node has its own) and its source address (`client_key`), and
      a key may name either part or both. With slow_link_bps too, a body is paced by both lines.
    - override_files: {path: text} -> served instead of (or in addition to) the repo's file;
      the commit sha changes with it (e.g. an index naming a shard that does not exist).
    """

    rate_limit_429: dict[str, Any] | None = None
    server_error_500: dict[str, Any] | None = None
    cut_body: dict[str, Any] | None = None
    stall_body: dict[str, Any] | None = None
    missing_file: list[str] = field(default_factory=list)
    slow_link_bps: int | None = None
    node_link_bps: int | dict[str, int] | None = None
    override_files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Faults:
        """Validate and normalise a JSON fault set; raises ValueError naming the bad key."""
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        f = cls()
        f.rate_limit_429 = _status_fault(obj.get("rate_limit_429"), "rate_limit_429")
        f.server_error_500 = _status_fault(obj.get("server_error_500"), "server_error_500")
        f.cut_body = _cut_fault(obj.get("cut_body"))
        f.stall_body = _cut_fault(obj.get("stall_body"))
        miss = obj.get("missing_file") or []
        f.missing_file = [miss] if isinstance(miss, str) else [str(m) for m in miss]
        bps = obj.get("slow_link_bps")
        if bps is not None and (not isinstance(bps, int) or bps <= 0):
            raise ValueError(f"slow_link_bps must be a positive int or null, got {bps!r}")
        f.slow_link_bps = bps
        f.node_link_bps = _node_links(obj.get("node_link_bps"))
        over = obj.get("override_files") or {}
        if not isinstance(over, dict) or not all(isinstance(v, str) for v in over.values()):
            raise ValueError("override_files must map path -> text")
        f.override_files = dict(over)
        return f


def _status_fault(v: Any, key: str) -> dict[str, Any] | None:
    if v in (None, False, {}):
        return None
    if v is True:
        v = {"scope": "all"}
    if isinstance(v, str):
        v = {"scope": v}
    if not isinstance(v, dict) or v.get("scope", "all") not in SCOPES:
        raise ValueError(f"{key} must be a scope in {SCOPES} or {{'scope','retry_after','times'}}, got {v!r}")
    clients = v.get("clients")
    if clients is not None and (not isinstance(clients, list) or not all(isinstance(c, str) for c in clients)):
        raise ValueError(f"{key}.clients must be a list of client keys (user, address or user@address), "
                         f"got {clients!r}")
    return {"scope": v.get("scope", "all"), "retry_after": int(v.get("retry_after", 1)),
            "times": None if v.get("times") is None else int(v["times"]), "clients": clients}


def _node_links(v: Any) -> int | dict[str, int] | None:
    def rate(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x > 0

    if v is None or v == {}:
        return None
    if rate(v):
        return v
    if isinstance(v, dict) and all(isinstance(k, str) and rate(x) for k, x in v.items()):
        return dict(v)
    raise ValueError(f"node_link_bps must be a positive int or {{client: positive int}}, got {v!r}")


def _cut_fault(v: Any) -> dict[str, Any] | None:
    if v in (None, False, {}, []):
        return None
    if isinstance(v, str):
        v = {"patterns": [v]}
    elif isinstance(v, list):
        v = {"patterns": v}
    if not isinstance(v, dict) or not v.get("patterns"):
        raise ValueError(f"cut_body must be a glob, a list of globs or {{'patterns','fraction','times'}}, got {v!r}")
    frac = float(v.get("fraction", 0.5))
    if not 0 <= frac < 1:
        raise ValueError(f"cut_body.fraction must be in [0, 1), got {frac}")
    pats = [v["patterns"]] if isinstance(v["patterns"], str) else list(v["patterns"])
    return {"patterns": pats, "fraction": frac, "times": None if v.get("times") is None else int(v["times"])}


def client_named(client: str, keys: list[str]) -> bool:
    """True when one of `keys` names the client `user@address` (the whole key, the user or the address)."""
    user, _, addr = client.rpartition("@")
    return any(k in (client, user, addr) for k in keys)


def matches(path: str, patterns: list[str]) -> bool:
    """True when `path` matches one of the globs `patterns`."""
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def take(faults: Faults, name: str, scope: str | None = None, path: str | None = None,
         client: str = "") -> dict | None:
    """The active fault `name` if it applies to this request (and client); counts down its `times`."""
    fault = getattr(faults, name)
    if not fault:
        return None
    if scope is not None and fault["scope"] not in ("all", scope):
        return None
    if fault.get("clients") is not None and not client_named(client, fault["clients"]):
        return None
    if path is not None and not matches(path, fault["patterns"]):
        return None
    if fault["times"] is not None:
        if fault["times"] <= 0:
            return None
        fault["times"] -= 1
    return dict(fault)

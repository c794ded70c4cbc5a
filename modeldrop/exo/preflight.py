"""The exo part of gate 0 (preflight): checks that need no running exo.

`exo_preflight(nodes, cfg) -> ExoPreflight(problems, builds, evidence)`; the lead's preflight gate
fails with `problems` (one line each, naming node, path and what is wrong):
- the exo binary at EXO_CMD_NODEk exists and `--help` runs (probe `tool`);
- the same generation and version on every node; drift names both sides, e.g.
  "exo drift: node1 NEW 0.3.70 (/path), node2 OLD 1.0.71 (/path)"; MLX, Python and macOS versions
  that differ across nodes are warnings (probe `runtime` beside exo's install, and the node facts);
- the API port is free on every node (a port held by exo that an earlier modeldrop run started
  is not a problem: the launcher stops its own processes by pid before starting);
- every EXO_EXTRA_ARGS flag is listed by each node's `exo --help`; what EXO_LIBP2P_PORT does with this
  generation is said in one warning line;
- MODEL_DIR_NODEk ends in the folder exo expects (`org--name`: exo looks a model up by that folder name), so path drift fails
  here, before any download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldrop.exo import flags
from modeldrop.exo.launcher import (
    ExoBuild,
    LaunchError,
    Node,
    describe_holders,
    previous_records,
    probe_api_port,
    probe_build,
)
from modeldrop.pernode import each


@dataclass
class ExoPreflight:
    problems: list[str]
    builds: dict[int, ExoBuild]
    evidence: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def flag_problems(k: int, build: ExoBuild, cfg: Any) -> list[str]:
    """EXO_EXTRA_ARGS flags node k's exo does not list in `--help` (exo would exit on them)."""
    missing = flags.missing_from_help(cfg.exo_extra_args, build.help_flags)
    if not missing:
        return []
    where = cfg.sources.get("EXO_EXTRA_ARGS", "EXO_EXTRA_ARGS")
    return [f"node{k}: EXO_EXTRA_ARGS ({where}) has {', '.join(missing)}, which `{build.exe} --help` "
            f"({build.generation.upper()}) does not list; remove it or install an exo that has it"]


def folder_problem(k: int, model_dir: str, folder: str) -> str | None:
    """The path-drift message when model_dir does not end in `folder`, else None."""
    last = model_dir.rstrip("/").rsplit("/", 1)[-1]
    if last == folder:
        return None
    return (f"MODEL_DIR_NODE{k} ends in '{last}' but exo looks for '{folder}' under its models dir "
            f"(set MODEL_DIR_NODE{k}=<dir>/{folder})")


def drift_problem(builds: dict[int, ExoBuild]) -> str | None:
    """One line naming every node's build when they are not all the same."""
    if len({b.identity() for b in builds.values()}) <= 1:
        return None
    return "exo drift: " + ", ".join(f"node{k} {b.label()}" for k, b in sorted(builds.items()))


def _own_pids(cfg: Any, k: int) -> set[int]:
    recs = previous_records(Path(cfg.report_dir), None, k)
    return {r.pid for r in recs if not r.stopped}


def port_problem(node: Node, k: int, cfg: Any) -> tuple[str | None, dict]:
    r = probe_api_port(node, cfg.api_port)
    if r.get("free"):
        return None, r
    holders = r.get("holders") or []
    if holders and {h["pid"] for h in holders} <= _own_pids(cfg, k):
        r["note"] = "held by exo an earlier modeldrop run started; the launcher stops it by pid"
        return None, r
    return (f"node{k}: API port {cfg.api_port} is in use by {describe_holders(r)} (exo's API needs it; stop that process or "
            f"change EXO_API_PORT; --stop-existing-exo stops it only if it is the configured exo)"), r


def runtime_of(node: Node, exo_cmd: str) -> dict[str, Any]:
    """Node's OS version (facts, cached) and the MLX / Python exo runs with (probe `runtime`); errors kept."""
    out: dict[str, Any] = {}
    try:
        facts = node.facts()
        out["os"] = facts.get("os_version")
        out["platform"] = facts.get("platform")
        out.update(node.run_probe("runtime", {"exo_cmd": exo_cmd}, timeout=60))
        out["python"] = out.get("python") or facts.get("python_version")
    except Exception as e:  # noqa: BLE001 - an unknown runtime is not a problem, only no drift evidence
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def runtime_drift(runtimes: dict[int, dict[str, Any]]) -> list[str]:
    """Warnings for MLX, Python and OS versions that differ across nodes (exo build drift is a problem instead)."""
    darwin = all(r.get("platform") == "darwin" for r in runtimes.values())
    out = []
    for key, label in (("mlx", "MLX"), ("python", "Python"), ("os", "macOS" if darwin else "OS")):
        values = {k: r.get(key) for k, r in sorted(runtimes.items())}
        if len({v for v in values.values() if v}) > 1:
            out.append(f"{label} drift across nodes: " + ", ".join(f"node{k} {v or '?'}" for k, v in values.items())
                       + " (keep every node on matching code and bindings before transport triage)")
    return out


def node_exo_checks(k: int, node: Node, cfg: Any) -> dict[str, Any]:
    """Node k's exo checks (folder, build and flags, API port, runtime); never raises for a node-side problem."""
    nc = cfg.node(k)
    out: dict[str, Any] = {"problems": [], "build": None, "port": None}
    p = folder_problem(k, nc.model_dir, cfg.model_folder)
    if p:
        out["problems"].append(p)
    try:
        out["build"] = probe_build(node, nc.exo_cmd)
        out["problems"] += flag_problems(k, out["build"], cfg)
    except LaunchError as e:
        out["problems"].append(f"node{k}: {e}")
    except Exception as e:  # noqa: BLE001 - one line per node, not a traceback
        out["problems"].append(f"node{k}: cannot probe exo at {nc.exo_cmd}: {type(e).__name__}: {e}")
    try:
        p, out["port"] = port_problem(node, k, cfg)
        if p and not cfg.stop_existing_exo:
            out["problems"].append(p)
        elif p:
            out["port"]["note"] = "in use; --stop-existing-exo will stop it if it is exo"
    except Exception as e:  # noqa: BLE001
        out["problems"].append(f"node{k}: cannot check API port {cfg.api_port}: {type(e).__name__}: {e}")
    out["runtime"] = runtime_of(node, nc.exo_cmd)
    return out


def exo_preflight(nodes: dict[int, Node], cfg: Any) -> ExoPreflight:
    """Run every exo preflight check on every node, all nodes at once; never raises for a node-side problem."""
    out = ExoPreflight([], {}, {"builds": {}, "ports": {}})
    checks = each(sorted(nodes), lambda k: node_exo_checks(k, nodes[k], cfg))
    for k, c in checks.items():
        out.problems += c["problems"]
        if c["build"] is not None:
            out.builds[k] = c["build"]
            out.evidence["builds"][f"node{k}"] = c["build"].__dict__
        if c["port"] is not None:
            out.evidence["ports"][f"node{k}"] = c["port"]
    d = drift_problem(out.builds)
    if d:
        out.problems.append(d)
    runtimes = {k: c["runtime"] for k, c in checks.items()}
    out.evidence["runtimes"] = {f"node{k}": r for k, r in runtimes.items()}
    out.warnings += runtime_drift(runtimes)
    lines = {flags.libp2p_port_line(cfg.libp2p_port, b.generation, b.help_flags) for b in out.builds.values()}
    out.warnings += sorted(line for line in lines if line)
    return out

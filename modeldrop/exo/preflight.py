"""The exo part of gate 0 (preflight): checks that need no running exo.

`exo_preflight(nodes, cfg) -> ExoPreflight(problems, builds, evidence)`; the lead's preflight gate
fails with `problems` (one line each, naming node, path and what is wrong):
- which exo each node runs: EXO_CMD_NODEk (or EXO_CMD), else the one install found where exo installs to (none,
  or two different ones, is a problem naming them; `installs`); the one used is said in `notes`;
- the exo binary exists and `--help` runs (probe `tool`);
- the same generation and version on every node; drift names both sides, e.g.
  "exo drift: node1 NEW 0.3.70 (/path), node2 OLD 1.0.71 (/path)"; MLX, Python and macOS versions
  that differ across nodes are warnings (probe `runtime` beside exo's install, and the node facts);
- the API port is free on every node (a port held by exo that an earlier modeldrop run started
  is not a problem: the launcher stops its own processes by pid before starting);
- every EXO_EXTRA_ARGS flag is listed by each node's `exo --help`; what EXO_LIBP2P_PORT does with this
  generation is said in one warning line; EXO_SYNCH_FLAG against every `exo --help` (`exo_flags.synch_choice`);
- every exo on the node that this run did not start (probe `exos`, `foreign`): the SSH user's are a problem with
  the one command that clears them, unless --stop-existing-exo will stop them;
- MODEL_DIR_NODEk ends in the folder exo expects (`org--name`: exo looks a model up by that folder name), \
so path drift fails
  here, before any download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldrop import exo_flags
from modeldrop.config import RunConfig
from modeldrop.exo import foreign, installs
from modeldrop.exo.launcher import (
    ExoBuild,
    LaunchError,
    Node,
    api_addresses,
    describe_holders,
    node_identity,
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
    notes: list[str] = field(default_factory=list)  # which exo each node runs, said in the gate's summary
    synch: exo_flags.SynchChoice | None = None


def flag_problems(k: int, build: ExoBuild, cfg: RunConfig) -> list[str]:
    """EXO_EXTRA_ARGS flags node k's exo does not list in `--help` (exo would exit on them)."""
    missing = exo_flags.missing_from_help(cfg.exo_extra_args, build.help_flags)
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


def _own_pids(node: Node, cfg: RunConfig, k: int) -> set[int]:
    recs = previous_records(Path(cfg.report_dir), None, k, node_identity(node, cfg.node(k).target))
    return {r.pid for r in recs if not r.stopped}


def port_problem(node: Node, k: int, cfg: RunConfig, exo_pids: set[int] | None = None) -> tuple[str | None, dict]:
    """The API port's problem, None when it is free, held by an earlier modeldrop run's exo, or by an exo that
    the foreign-exo lines already name (`exo_pids`)."""
    r = probe_api_port(node, cfg.api_port)
    if r.get("free"):
        return None, r
    holders = r.get("holders") or []
    if holders and {h["pid"] for h in holders} <= (exo_pids or set()):
        r["note"] = "held by an exo this run did not start (named in its own line)"
        return None, r
    if holders and {h["pid"] for h in holders} <= _own_pids(node, cfg, k):
        r["note"] = "held by exo an earlier modeldrop run started; the launcher stops it by pid"
        return None, r
    return (f"node{k}: API port {cfg.api_port} is in use by {describe_holders(r)} "
            f"(exo's API needs it; stop that process or "
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


def choose_exo(node: Node, k: int, cfg: RunConfig, out: ExoPreflight) -> installs.ExoChoice | None:
    """Which exo node k runs (configured, else looked up); its problem or the line saying which was used."""
    nc = cfg.node(k)
    try:
        choice = installs.choose(nc, node.facts(), cfg.sources)
    except Exception as e:  # noqa: BLE001 - one line per node, not a traceback
        out.problems.append(f"node{k}: cannot look for exo: {type(e).__name__}: {e}")
        return None
    out.evidence["exo_choice"][f"node{k}"] = {"path": choice.path, "how": choice.how, "found": list(choice.found)}
    if choice.problem:
        out.problems.append(choice.problem)
    else:
        out.notes.append(choice.line(nc.name))
    return choice


def foreign_check(node: Node, k: int, cfg: RunConfig, choice: installs.ExoChoice | None) -> list[foreign.ForeignExo]:
    """The exo processes on node k this run did not start (an earlier modeldrop run's are the launcher's)."""
    programs = ([choice.path] if choice and choice.path else []) + [f["path"] for f in (choice.found if choice else ())]
    return foreign.scan(node, programs, api_addresses(node), cfg.api_port, _own_pids(node, cfg, k))


def _empty() -> ExoPreflight:
    return ExoPreflight([], {}, {"builds": {}, "ports": {}, "exo_choice": {}, "foreign_exo": {}})


def node_exo_checks(k: int, node: Node, cfg: RunConfig) -> tuple[ExoPreflight, list[foreign.ForeignExo], dict]:
    """Node k's exo checks (folder, which exo, build and flags, foreign exo, API port, runtime): its own
    ExoPreflight, the foreign exo found and its runtime; never raises for a node-side problem."""
    out, found, runtime = _empty(), [], {}
    nc = cfg.node(k)
    p = folder_problem(k, nc.model_dir, cfg.model_folder)
    if p:
        out.problems.append(p)
    choice = choose_exo(node, k, cfg, out)
    try:
        if choice is not None and choice.path:
            out.builds[k] = probe_build(node, choice.path)
            out.evidence["builds"][f"node{k}"] = out.builds[k].__dict__
            out.problems += flag_problems(k, out.builds[k], cfg)
            runtime = runtime_of(node, choice.path)
    except LaunchError as e:
        out.problems.append(f"node{k}: {e}")
    except Exception as e:  # noqa: BLE001 - one line per node, not a traceback
        out.problems.append(f"node{k}: cannot probe exo at {choice and choice.path}: {type(e).__name__}: {e}")
    try:
        found = foreign_check(node, k, cfg, choice)
        out.evidence["foreign_exo"][f"node{k}"] = [f.to_json() for f in found]
    except Exception as e:  # noqa: BLE001
        out.warnings.append(f"node{k}: cannot list the exo processes running there: {type(e).__name__}: {e}")
    try:
        p, r = port_problem(node, k, cfg, {f.pid for f in found})
        out.evidence["ports"][f"node{k}"] = r
        if p and not cfg.stop_existing_exo:
            out.problems.append(p)
        elif p:
            out.evidence["ports"][f"node{k}"]["note"] = "in use; --stop-existing-exo will stop it if it is exo"
    except Exception as e:  # noqa: BLE001
        out.problems.append(f"node{k}: cannot check API port {cfg.api_port}: {type(e).__name__}: {e}")
    return out, found, runtime


def exo_preflight(nodes: dict[int, Node], cfg: RunConfig, rerun: str = "pytest gates/") -> ExoPreflight:
    """Run every exo preflight check on every node, all nodes at once; never raises for a node-side problem.
    `rerun` is the run's own command (the one command that clears foreign exo adds --stop-existing-exo to it)."""
    out = _empty()
    found: dict[int, list[foreign.ForeignExo]] = {}
    runtimes: dict[int, dict] = {}
    for k, (part, found[k], runtime) in each(sorted(nodes), lambda k: node_exo_checks(k, nodes[k], cfg)).items():
        out.problems += part.problems
        out.warnings += part.warnings
        out.notes += part.notes
        out.builds.update(part.builds)
        for key, val in part.evidence.items():
            out.evidence[key].update(val)
        if k in part.builds:
            runtimes[k] = runtime
    problems, warnings = foreign.preflight_lines({k: v for k, v in found.items() if v}, cfg, rerun)
    out.problems += problems
    out.warnings += warnings
    d = drift_problem(out.builds)
    if d:
        out.problems.append(d)
    if out.builds and len(out.builds) == len(nodes):
        where = cfg.sources.get("EXO_SYNCH_FLAG", "EXO_SYNCH_FLAG")
        listed = {k: (b.exe, b.help_flags) for k, b in out.builds.items()}
        out.synch = exo_flags.synch_choice(cfg.exo_synch_flag, listed, f"EXO_SYNCH_FLAG ({where})")
        out.problems += out.synch.problems
        out.warnings += out.synch.warnings
        out.evidence["synch_flag"] = {"setting": cfg.exo_synch_flag, "args": list(out.synch.args),
                                      "lacking": {f"node{k}": exe for k, exe in out.synch.lacking.items()}}
    out.evidence["runtimes"] = {f"node{k}": r for k, r in runtimes.items()}
    out.warnings += runtime_drift(runtimes)
    lines = {exo_flags.libp2p_port_line(cfg.libp2p_port, b.generation, b.help_flags) for b in out.builds.values()}
    out.warnings += sorted(line for line in lines if line)
    return out

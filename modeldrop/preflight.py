"""Preflight (phase 0), file side: SSH and python3, the exact hf binary, disk, writable parent, reach,
and the model-dir-mismatch fast stop (the model complete elsewhere on the node, the configured dir empty).

`check_node` runs on one node in one probe per question and returns the problems found, each a
line naming the node and the evidence. It also reads what long remote work recorded on the node (probe
`leftovers`): work a crashed or killed controller left running is named and stopped by pid after the identity
check, work of another live run is named and left alone; each is a warning line. The exo side of preflight
is `modeldrop.exo.preflight`.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modeldrop import probes
from modeldrop.config import NodeConfig, RunConfig
from modeldrop.errors import NodeError
from modeldrop.exo.placeable import ring_rule
from modeldrop.exo.state import Topology
from modeldrop.nodes import Node
from modeldrop.pernode import each
from modeldrop.verdict import Verdict

GB = 1_000_000_000
MACOS_ERRNO_HINT = {65: "no route to host (macOS Local Network privacy or wrong subnet)",
                    60: "timed out (firewall drop or host down)", 61: "connection refused"}


@dataclass
class NodePreflight:
    """What preflight saw on one node, and the problems it found there."""

    k: int
    facts: dict[str, Any] = field(default_factory=dict)
    hf: dict[str, Any] = field(default_factory=dict)
    disk: dict[str, Any] = field(default_factory=dict)
    present_bytes: int = 0
    located: dict[str, Any] = field(default_factory=dict)
    leftovers: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


FACTS_TIMEOUT_S, HF_TOOL_TIMEOUT_S, DISK_TIMEOUT_S, DIRSIZE_TIMEOUT_S = 60.0, 90.0, 60.0, 300.0
LEFTOVERS_TIMEOUT_S, LEFTOVER_GRACE_S = 60.0, 10.0
NODE_CHECK_BUDGET_S = (FACTS_TIMEOUT_S + LEFTOVERS_TIMEOUT_S + HF_TOOL_TIMEOUT_S + DISK_TIMEOUT_S
                       + DIRSIZE_TIMEOUT_S)  # check_node's worst case
REACH_TIMEOUT_S = 60.0  # one node's reach probe


def check_node(node: Node, nc: NodeConfig, cfg: RunConfig, expected_total: int | None) -> NodePreflight:
    """Check node `nc`: SSH + python3, hf runs, parent writable, free disk ≥ what is still to download."""
    out = NodePreflight(nc.index)
    try:
        # fills the node's cache (expand_path, exo launcher)
        out.facts = node.facts(refresh=True, timeout=FACTS_TIMEOUT_S)
    except NodeError as e:
        out.problems.append(f"{nc.name} ({nc.target}): cannot run probes: {e}")
        return out
    try:  # the node answered once; a later probe failing (timeout, dropped link) is a problem line too
        out.leftovers = node.run_probe("leftovers", {"record_dir": probes.NODE_RECORD_DIR, "stop": True,
                                                     "grace_s": LEFTOVER_GRACE_S, "own_run": node.run_id},
                                       timeout=LEFTOVERS_TIMEOUT_S)
        out.warnings += leftover_lines(nc, out.leftovers)
        out.hf = node.run_probe("tool", {"path": nc.hf_cmd, "args": ["version"], "timeout": 60, "env": {}},
                                timeout=HF_TOOL_TIMEOUT_S)
        out.problems += hf_problems(nc, out.hf)
        out.disk = node.run_probe("disk", {"path": nc.model_dir}, timeout=DISK_TIMEOUT_S)
        out.located = node.run_probe("locate", {"path": nc.model_dir, "model_folder": cfg.model_folder},
                                     timeout=DIRSIZE_TIMEOUT_S)
        out.present_bytes = int(out.located.get("bytes") or 0)
        out.problems += dir_mismatch_problems(nc, out.located, cfg.sources)
        out.problems += disk_problems(nc, out.disk, required_free_bytes(cfg, expected_total, out.present_bytes))
    except NodeError as e:  # CommandTimeout is a NodeError
        out.problems.append(f"{nc.name} ({nc.target}): {e}")
    return out


def leftover_lines(nc: NodeConfig, leftovers: dict[str, Any]) -> list[str]:
    """One line per recorded process the `leftovers` probe found running: stopped (its controller was gone) or
    left alone (another live run's)."""
    out = []
    for row in leftovers.get("found") or []:
        pids = ", ".join(str(p.get("pid")) for p in row.get("procs") or [])
        what = f"pid {pids} ({row.get('what')}, run {row.get('run_id') or '?'})"
        if row.get("state") == "live":
            out.append(f"{nc.name}: {what} is working for another run that is still connected (heartbeat "
                       f"{row.get('heartbeat_age_s')}s ago); left running (stop that run first if it is not wanted)")
        else:
            result = str(row.get("result") or "not stopped")
            todo = "" if result.startswith("stopped") else f" (stop it on {nc.name} yourself: kill {pids})"
            out.append(f"{nc.name}: {what} was left running by a run whose controller is gone (no heartbeat for "
                       f"{row.get('heartbeat_age_s')}s): {result}{todo}")
    return out


def dir_mismatch_problems(nc: NodeConfig, located: dict[str, Any], sources: dict[str, str]) -> list[str]:
    """The guide's fast stop "model dir mismatch": the configured dir is empty or absent while a complete
    copy of the model sits elsewhere on the node; names both paths and the two ways out."""
    complete = [a for a in located.get("elsewhere") or [] if a.get("complete")]
    if int(located.get("files") or 0) > 0 or not complete:
        return []
    best = max(complete, key=lambda a: (a.get("total_size", 0), a.get("n_files", 0)))
    key = f"MODEL_DIR_NODE{nc.index}"
    where = f" ({sources[key]})" if key in sources else ""
    return [f"{nc.name}: model dir mismatch (fast stop): {key}={nc.model_dir}{where} is empty or absent, but the "
            f"model is complete at {best['path']} "
            f"({best.get('n_files')} files, {best.get('total_size', 0) / GB:.2f} GB); "
            f"either set {key}={best['path']}, or move it: mv {best['path']} {located.get('expanded') or nc.model_dir}"]


def hf_problems(nc: NodeConfig, tool: dict[str, Any]) -> list[str]:
    """Problems with node's hf binary: missing, not executable, or failing to run."""
    where = f"{nc.name}: HF_CMD_NODE{nc.index}={nc.hf_cmd}"
    if not tool.get("exists"):
        return [f"{where} not found on the node "
                f"(install huggingface_hub there, or set HF_CMD_NODE{nc.index} to its absolute path)"]
    if not tool.get("executable"):
        return [f"{where} is not executable"]
    if tool.get("rc") != 0:
        err = (tool.get("stderr_head") or tool.get("error") or "").strip().splitlines()
        return [f"{where} fails to run (rc {tool.get('rc')}): {err[-1] if err else 'no output'}"]
    return []


def required_free_bytes(cfg: RunConfig, expected_total: int | None, present: int) -> int | None:
    """Free bytes still needed: the profile's threshold (or model size + 10% + 1 GB) minus what is on disk."""
    need = cfg.min_free_bytes
    if need is None and expected_total:
        need = int(expected_total * 1.10 + GB)
    if need is None:
        return None
    return max(0, need - present)


def disk_problems(nc: NodeConfig, disk: dict[str, Any], required: int | None) -> list[str]:
    """Problems with the model dir's disk: parent not writable, free space below what is required."""
    problems = []
    if not disk.get("parent_writable"):
        problems.append(f"{nc.name}: the parent of MODEL_DIR_NODE{nc.index}={nc.model_dir} is not writable "
                        f"(nearest existing dir: {disk.get('nearest_existing')})")
    free = disk.get("free_bytes")
    if required is not None and free is not None and free < required:
        problems.append(f"{nc.name}: disk free {free / GB:.2f} GB at {disk.get('nearest_existing')} is below the "
                        f"threshold {required / GB:.2f} GB needed for {nc.model_dir}")
    return problems


def ssh_port(node: Node) -> int:
    """The port the control host reaches the node's sshd at (`user@host:2222`, ssh_config Port); 22 for local."""
    resolved = getattr(node, "resolved", None)  # SSHNode only
    return int(resolved.port) if resolved is not None else 22


def reach_problems(pre: dict[int, NodePreflight], nodes: dict[int, Node],
                   cfg: RunConfig) -> tuple[list[str], list[str]]:
    """(problems, notes): each node opens TCP to every other node's SSH port at the address the control host uses
    (every node probes at once). A pair that cannot connect fails preflight only when the pairs that can leave EXO
    no way to place the configured instance over all nodes (`exo.placeable`: for MlxRing a ring, as four Macs on a
    Thunderbolt ring reach only their neighbours; for MlxJaccl every pair); otherwise it is a note."""
    if len(nodes) < 2:
        return [], []
    addresses = {k: nodes[k].address() for k in nodes}

    def probe(k: int) -> list[tuple[int, dict]]:
        others = [j for j in sorted(nodes) if j != k]
        targets = [[addresses[j], ssh_port(nodes[j])] for j in others]
        found = nodes[k].run_probe("reach", {"targets": targets, "timeout": 3}, timeout=REACH_TIMEOUT_S)["results"]
        return list(zip(others, found, strict=False))
    lines, linked = [], set()
    for k, results in each(sorted(nodes), probe).items():
        for j, r in results:
            if r["ok"]:
                linked.add((f"node{k}", f"node{j}"))
            else:
                hint = MACOS_ERRNO_HINT.get(r.get("errno") or 0, r.get("error") or "")
                lines.append(f"node{k} cannot reach {r['host']}:{r['port']} (errno {r.get('errno')}: {hint})")
    if not lines:
        return [], []
    if cfg.instance_meta == "MlxJaccl":
        return lines + ["reach: MlxJaccl needs every pair of nodes to reach each other"], []
    names = [f"node{k}" for k in sorted(nodes)]
    rule = ring_rule(names, Topology(frozenset(names), frozenset(linked), "reach", frozenset(linked)), "MlxRing", {})
    if rule.ok:
        return [], [f"{line} (EXO can still place {cfg.instance_meta} over a ring through every node)"
                    for line in lines]
    return lines + [f"reach: {rule.problem}"], []


def duplicate_problems(pre: dict[int, NodePreflight], cfg: RunConfig) -> list[str]:
    """Nodes listed twice: the same target, or targets that reach the same machine (machine id, else hostname)
    as the same user (uid and home), one problem line naming both."""
    by_target: dict[str, int] = {}
    by_identity: dict[tuple, int] = {}
    problems = []
    for k in sorted(pre):
        f, nc = pre[k].facts, cfg.node(k)
        identity = (f.get("machine_id") or f.get("hostname"), f.get("uid", f.get("user")), f.get("home")) if f else None
        if nc.target in by_target:
            how = f"the same target {nc.target}"
            j = by_target[nc.target]
        elif identity in by_identity:
            j = by_identity[identity]
            how = (f"{cfg.node(j).target} and {nc.target} reach the same machine ({f.get('hostname')}) and user "
                   f"({f.get('user')})")
        else:
            by_target[nc.target] = k
            if identity is not None:
                by_identity[identity] = k
            continue
        problems.append(f"node{j} and node{k} are the same node: {how}; list each Mac once "
                        f"(NODES or NODE1..NODE{len(pre)})")
    return problems


SSH_LOGIN_TIMEOUT_S = 8  # one node-to-node login: ConnectTimeout 5 s plus the login itself


def ssh_login_argv(user: str | None, host: str, port: int) -> list[str]:
    """A non-interactive SSH login that only proves it can log in: keys only (BatchMode), host keys checked against
    the node's own known_hosts (never accepted on the fly), `true` as the command."""
    return ["/usr/bin/ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5",
            "-o", "NumberOfPasswordPrompts=0", "-T", "-p", str(port), f"{user}@{host}" if user else host, "true"]


def ssh_login_warnings(nodes: dict[int, Node], cfg: RunConfig) -> tuple[list[str], dict[str, Any]]:
    """The guide's "SSH access works both directions": an SSH login from each node to each other node, as the
    user and at the address the control host uses; where the node's keys or known_hosts do not allow it, one
    warning line per pair (never a stop: the bootstrap itself needs no node-to-node SSH). Local nodes are skipped."""
    targets = {k: (getattr(getattr(n, "resolved", None), "user", None), n.address(), ssh_port(n))
               for k, n in nodes.items() if getattr(n, "resolved", None) is not None}

    def login(k: int, j: int) -> tuple[int | None, str]:
        user, host, port = targets[j]
        try:
            r = nodes[k].run(ssh_login_argv(user, host, port), timeout=SSH_LOGIN_TIMEOUT_S)
            return r.rc, (r.stderr.strip().splitlines() or [""])[-1]
        except NodeError as e:
            return None, str(e)

    pairs = [(k, j) for k in sorted(targets) for j in sorted(targets) if j != k]
    if not pairs:
        return [], {}
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:  # every login at once: N-1 sessions per node
        done = dict(zip(pairs, pool.map(lambda p: login(*p), pairs), strict=True))
    warnings, seen = [], {}
    for (k, j), (rc, err) in done.items():
        user, host, port = targets[j]
        seen[f"node{k}->node{j}"] = {"rc": rc, "error": err if rc != 0 else None}
        if rc != 0:
            warnings.append(f"node{k} cannot SSH to node{j} ({user + '@' if user else ''}{host}:{port}): "
                            f"{err[:160] or f'rc {rc}'} (the guide has SSH work both ways: on node{k}, put a key "
                            f"node{j} authorizes and node{j}'s host key in its known_hosts)")
    return warnings, seen


def preflight_verdict(problems: list[str], warnings: list[str], n_nodes: int, notes: Iterable[str] = ()) -> Verdict:
    """The preflight gate's verdict: every problem found on every node, counted and joined in one line; a pass says
    which exo each node runs (`notes`)."""
    if problems:
        return Verdict.failed(problems, summary=f"{len(problems)} preflight problem(s): " + " | ".join(problems),
                              warnings=warnings)
    said = "; ".join(notes)
    return Verdict.passed(f"{n_nodes} node(s) ready for the bootstrap" + (f"; {said}" if said else ""),
                          warnings=warnings)

"""Pure verdicts on EXO observations (startup, cluster, placement, transport, chat): observations in,
`modeldrop.verdict.Verdict` out. No I/O, no clocks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modeldrop.exo.logs import HostfileLine
from modeldrop.exo.placeable import LinkRule, ring_rule
from modeldrop.exo.state import ClusterView, Instance, InstanceProgress
from modeldrop.verdict import Verdict

NON_NEIGHBOUR = "198.51.100.1:0"
# `Terminated (signal=9 (Killed: 9))`: the runner process was killed by a signal (OOM killer, an outside kill)
SIGNAL_RX = re.compile(r"signal=(\d+)")


# -- startup (phase 4) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StartupSample:
    """One look at one node: is our pid alive with its start time, and what does /node_id say."""

    t: float
    alive: bool
    start: float | None
    node_id: str | None
    api_error: str | None = None


def startup_verdict(samples: dict[int, list[StartupSample]], expected_start: dict[int, float | None]) -> Verdict:
    """Every node's API answered, and no process exited or restarted (pid/start or /node_id change)."""
    problems, facts = [], {"exited": [], "restarted": [], "no_api": []}
    for k, ss in sorted(samples.items()):
        ids = [s.node_id for s in ss if s.node_id]
        if any(not s.alive for s in ss):
            t = next(s.t for s in ss if not s.alive)
            if ids:  # it had answered: a crash after start (a crash loop under any supervisor)
                problems.append(f"node{k}: exo exited {t:.1f}s after start, after its API had answered")
                facts["restarted"].append(k)
            else:
                problems.append(f"node{k}: exo exited {t:.1f}s after start, before its API answered")
            facts["exited"].append(k)
        elif any(s.start is not None and expected_start.get(k) is not None
                 and abs(s.start - float(expected_start[k])) > 1.5 for s in ss):
            problems.append(f"node{k}: exo restarted (process start time changed)")
            facts["restarted"].append(k)
        if len(set(ids)) > 1:
            problems.append(f"node{k}: /node_id changed {' -> '.join(dict.fromkeys(ids))} (exo restarted)")
            facts["restarted"].append(k)
        if not ids and k not in facts["exited"]:
            last = next((s.api_error for s in reversed(ss) if s.api_error), "no answer")
            problems.append(f"node{k}: API never answered /node_id ({last})")
            facts["no_api"].append(k)
    details = {f"node{k}": [s.__dict__ for s in ss[-5:]] for k, ss in samples.items()}
    if problems:
        return Verdict.failed(problems, details, facts)
    ids = {k: next(s.node_id for s in ss if s.node_id) for k, ss in samples.items()}
    return Verdict.passed("every exo up and stable: " + ", ".join(f"node{k}={v[:12]}" for k, v in sorted(ids.items())),
                          details, {"node_ids": ids})


# -- cluster (phase 5) ----------------------------------------------------------------------------
def cluster_verdict(live_ids: dict[int, str], views: dict[int, ClusterView | None], n: int,
                    meta: str = "MlxRing", errors: dict[int, str] | None = None) -> Verdict:
    """Every node's API lists all N live node ids and no others, and its topology lets EXO place `meta` over all
    N nodes (`placeable.ring_rule`: MlxRing a ring whose neighbours link both ways, MlxJaccl every pair); pairs
    with no link that no ring needs are listed in details["links_not_needed"], never a failure. A node whose
    /state did not answer is named with `errors[k]` (why not)."""
    want = sorted(live_ids.values())
    name = {v: f"node{k}" for k, v in live_ids.items()}
    problems, isolated, seen_by = [], [], {}
    rules: dict[int, LinkRule] = {}
    for k, view in sorted(views.items()):
        if view is None:
            why = (errors or {}).get(k)
            problems.append(f"node{k}: /state not readable" + (f" ({why})" if why else ""))
            continue
        members = view.members
        missing = [x for x in want if x not in members]
        extra = sorted(members - set(want))
        if len(members & set(want)) < n:
            isolated.append(k)
            problems.append(f"node{k} sees {len(members & set(want))}/{n} nodes (missing "
                            f"{', '.join(name[x] for x in missing)})")
        if extra:
            problems.append(f"node{k} lists {len(extra)} node id(s) that no node answers as /node_id "
                            f"(ghosts or another exo in the namespace): {', '.join(x[:12] for x in extra)}")
        if not missing:
            rules[k] = ring_rule([live_ids[j] for j in sorted(live_ids)], view.topology, meta, name, view.rdma_ctl)
            if not rules[k].ok:
                seen_by.setdefault(rules[k].problem, []).append(f"node{k}")
    problems += [p if len(ks) == len(views) else f"{p} (in the topology {', '.join(ks)} serve{'s' * (len(ks) == 1)})"
                 for p, ks in seen_by.items()]
    failing = [r for r in rules.values() if not r.ok]
    details = {"live_ids": {f"node{k}": v for k, v in live_ids.items()}, "instance_meta": meta,
               "views": {f"node{k}": (v.summary() if v else None) for k, v in views.items()},
               "ring": {f"node{k}": [name.get(x, x) for x in r.ring] for k, r in rules.items() if r.ok},
               "links_not_needed": sorted({note for r in rules.values() if r.ok for note in r.notes})}
    facts = {"isolated": isolated, "n": n, "ghosts": any("ghosts" in p for p in problems),
             "missing_edges": any(r.one_way or r.missing_links for r in failing),
             "no_ring": sorted({x for r in failing for x in r.missing_links}),
             "one_way": sorted({x for r in failing for x in r.one_way})}
    if problems:
        return Verdict.failed(problems, details, facts)
    ring = next(iter(details["ring"].values()), [])
    how = ("one node" if n < 2 else "every pair linked" if meta == "MlxJaccl"
           else "ring " + " → ".join([*ring, ring[0]]))
    return Verdict.passed(f"{n} node(s) on every node's API, placeable as {meta} over all of them ({how})",
                          details, facts)


# -- placement (phase 5) --------------------------------------------------------------------------
def ready_verdict(progress: InstanceProgress, ever_present: bool, stalled_s: float | None,
                  timed_out: bool, elapsed_s: float) -> Verdict:
    """Ready = every runner of the instance RunnerReady/RunnerRunning; otherwise say why not."""
    details = {"instance_id": progress.instance_id, "runners": progress.labels(), "elapsed_s": round(elapsed_s, 1)}
    if progress.ready:
        return Verdict.passed(f"all {len(progress.expected)} runner(s) Ready/Running after {elapsed_s:.1f}s",
                              details, {})
    if progress.failures:
        msgs = "; ".join(f"on {progress.node_of(r)}, runner {r[:8]}: {_one_line(m)}"
                         for r, m in progress.failures.items())
        signals = sorted({int(x) for m in progress.failures.values() for x in SIGNAL_RX.findall(str(m))})
        facts = {"runner_failed": True, "errors": list(progress.failures.values()),
                 "runner_nodes": [progress.node_of(r) for r in progress.failures]}
        if signals:
            facts["runner_signal"] = signals
        details["failed_on"] = {r[:8]: progress.node_of(r) for r in progress.failures}
        return Verdict.failed(f"RunnerFailed: {msgs}", details, facts)
    if ever_present and not progress.present:
        return Verdict.failed(f"instance {progress.instance_id} vanished from /state after {elapsed_s:.1f}s "
                              "(a runner failed or a node left; read every node's log)", details, {"vanished": True})
    if not ever_present:
        return Verdict.failed(f"instance {progress.instance_id} never appeared in /state within {elapsed_s:.1f}s",
                              details, {"never_created": True})
    if stalled_s is not None:
        return Verdict.failed(f"no runner progress for {stalled_s:.0f}s: {details['runners']}", details,
                              {"stalled": True, "runners": details["runners"]})
    why = "timed out" if timed_out else "not ready"
    return Verdict.failed(f"{why} after {elapsed_s:.0f}s: {details['runners']}", details,
                          {"stalled": True, "runners": details["runners"]})


def _one_line(msg: str, limit: int = 300) -> str:
    """A RunnerFailed.errorMessage (multi-line traceback) as one line, the runner error kept in front."""
    lines = [x.strip() for x in str(msg).splitlines() if x.strip()]
    key = [x for x in lines if x.startswith("Runner error") or "Couldn't" in x or "Error:" in x]
    return " | ".join(dict.fromkeys(lines[:1] + key[:2]))[:limit]


# -- transport (phase 6) --------------------------------------------------------------------------
def expected_hosts(inst: Instance, nid: str) -> list[str]:
    return inst.hosts_by_node.get(nid) or []


def neighbour_ips(inst: Instance, nid: str) -> set[str]:
    return {h.rsplit(":", 1)[0] for h in expected_hosts(inst, nid)
            if not h.startswith("0.0.0.0:") and h != NON_NEIGHBOUR}


def transport_verdict(inst: Instance, node_ids: dict[int, str], hostfiles: dict[int, list[HostfileLine]],
                      sockets: dict[int, list[dict]], errors: dict[int, list[int]],
                      coord_lines: dict[int, list[str]] | None = None,
                      jaccl_errors: dict[int, list[int]] | None = None) -> Verdict:
    """Ring: logged hosts == hostsByNode, ESTABLISHED sockets to the neighbours on the ring port, no errno lines.
    JACCL: every node's coordinator line, no `[jaccl] Couldn't connect (error: N)` line."""
    problems, facts = [], {"ring_errno": sorted({e for es in errors.values() for e in es}), "mismatch": False}
    jaccl_errors = jaccl_errors or {}
    if any(jaccl_errors.values()):
        facts["jaccl_errno"] = sorted({e for es in jaccl_errors.values() for e in es})
    details: dict[str, Any] = {"kind": inst.kind, "ephemeral_port": inst.ephemeral_port,
                               "hosts_by_node": inst.hosts_by_node, "jaccl_coordinators": inst.jaccl_coordinators}
    for k, errs in sorted(errors.items()):
        if errs:
            problems.append(f"node{k}: [ring] Couldn't connect (error: {', '.join(map(str, sorted(set(errs))))})")
    for k, errs in sorted(jaccl_errors.items()):
        if errs:
            problems.append(f"node{k}: [jaccl] Couldn't connect (error: {', '.join(map(str, sorted(set(errs))))}): "
                            "the JACCL coordinator is unreachable from that node")
    if len(inst.node_ids) < 2 and inst.shard_count >= 2:
        facts["no_runner_map"] = True
        problems.append(f"instance {inst.instance_id} has {inst.shard_count} shards but its nodeToRunner lists "
                        f"{len(inst.node_ids)} node(s): no evidence of which node runs which rank, so the ring "
                        "cannot be checked")
        return Verdict.failed(problems, details, facts)
    if len(inst.node_ids) < 2:
        return Verdict.judged(problems, "1-node instance: no ring to check", details, facts)
    if not inst.is_ring:
        for k, nid in sorted(node_ids.items()):
            if nid in inst.node_to_runner and not (coord_lines or {}).get(k):
                problems.append(f"node{k}: no `rank N MLX_JACCL_COORDINATOR:` line in its exo log")
        return Verdict.judged(problems, "JACCL coordinators announced on every node", details, facts)
    port = inst.ephemeral_port
    for k, nid in sorted(node_ids.items()):
        if nid not in inst.node_to_runner:
            continue
        want = expected_hosts(inst, nid)
        got = hostfiles.get(k) or []
        details[f"node{k}_logged"] = [h.hosts for h in got]
        if not got:
            problems.append(f"node{k}: no `rank N hostfile: ... hosts: [...]` line in its exo log")
        elif got[-1].hosts != want:
            facts["mismatch"] = True
            problems.append(f"node{k}: log says hosts {got[-1].hosts}, /state hostsByNode says {want}")
        peers = neighbour_ips(inst, nid)
        est = [s for s in sockets.get(k) or [] if s.get("state") == "ESTABLISHED" and port is not None
               and _on_port(s, port) and _peer_ip(s, port) in peers]
        details[f"node{k}_sockets"] = sockets.get(k)
        linked = {_peer_ip(s, port) for s in est}
        if port is not None and not peers <= linked:
            problems.append(f"node{k}: no ESTABLISHED socket on ring port {port} to "
                            f"{', '.join(sorted(peers - linked))}")
            facts["no_socket"] = True
    if problems:
        return Verdict.failed(problems, details, facts)
    return Verdict.passed(f"ring port {port}: hosts match /state and sockets ESTABLISHED to every neighbour",
                          details, facts)


def logged_ring_verdict(inst: Instance, node_ids: dict[int, str], hostfiles: dict[int, list[HostfileLine]],
                        sockets: dict[int, list[dict]], errors: dict[int, list[int]]) -> Verdict | None:
    """The ring as the runners logged it, for when /state's nodeToRunner does not say which node runs which rank:
    each node's latest `rank r hostfile` line of this instance (its own entry, its neighbours: the entries that are
    neither its own nor the non-neighbour placeholder), ranks all different, an ESTABLISHED socket to every
    neighbour on the ring port, no errno lines. None when a node logged no such line (nothing to check)."""
    lines = {k: [h for h in hostfiles.get(k) or [] if inst.instance_id in h.path] for k in node_ids}
    if not node_ids or not all(lines.values()):
        return None
    problems = [f"node{k}: [ring] Couldn't connect (error: {', '.join(map(str, sorted(set(es))))})"
                for k, es in sorted(errors.items()) if es]
    details: dict[str, Any] = {"from": "the runners' own hostfile lines (nodeToRunner is empty in /state)"}
    ranks = {k: ls[-1].rank for k, ls in lines.items()}
    if len(set(ranks.values())) != len(ranks):
        problems.append(f"two nodes logged the same rank: {ranks}")
    port = None
    for k, ls in sorted(lines.items()):
        last = ls[-1]
        own = last.hosts[last.rank] if last.rank < len(last.hosts) else ""
        port = _split(own)[1] or port
        peers = {_split(h)[0] for i, h in enumerate(last.hosts)
                 if i != last.rank and h != NON_NEIGHBOUR and not h.startswith("0.0.0.0:")}
        details[f"node{k}_logged"] = {"rank": last.rank, "hosts": last.hosts}
        details[f"node{k}_sockets"] = sockets.get(k)
        linked = {_peer_ip(x, port) for x in sockets.get(k) or [] if x.get("state") == "ESTABLISHED"
                  and port is not None and _on_port(x, port)}
        if port is None or not peers <= linked:
            problems.append(f"node{k} (rank {last.rank}): no ESTABLISHED socket on ring port {port} to "
                            f"{', '.join(sorted(peers - linked)) or 'its neighbours'}")
    facts = {"ring_errno": sorted({e for es in errors.values() for e in es}), "no_socket": any(
        "no ESTABLISHED" in p for p in problems)}
    return Verdict.judged(problems, f"ring port {port}, checked from the runners' own hostfile lines (/state's "
                                    "nodeToRunner is empty): sockets ESTABLISHED to every neighbour", details, facts)


def _split(addr: str) -> tuple[str, int | None]:
    host, _, p = str(addr).rpartition(":")
    return host.strip("[]"), int(p) if p.isdigit() else None


def _on_port(s: dict, port: int) -> bool:
    return _split(s.get("local", ""))[1] == port or _split(s.get("remote", ""))[1] == port


def _peer_ip(s: dict, port: int) -> str:
    host = _split(s.get("remote", ""))[0]
    return host[7:] if host.startswith("::ffff:") else host


# -- chat (phase 7) ---------------------------------------------------------------------------------
def chat_verdict(results: list[dict]) -> Verdict:
    """Every chat answered: HTTP 200, complete body, text or reasoning_content non-empty."""
    problems = []
    for r in results:
        where = f"node{r['node']} {'stream' if r['stream'] else 'non-stream'}"
        if r.get("error"):
            problems.append(f"{where}: {r.get('error_kind')}: {str(r['error'])[:200]}")
        elif not (r.get("text_chars") or r.get("reasoning_chars")):
            problems.append(f"{where}: HTTP {r.get('status')} but no content and no reasoning_content")
    facts = {"kinds": sorted({str(r.get("error_kind")) for r in results if r.get("error")}),
             "statuses": sorted({r.get("status") for r in results if r.get("status") is not None})}
    if problems:
        return Verdict.failed(problems, {"results": results}, facts)
    lat = ", ".join(f"node{r['node']}{'/s' if r['stream'] else ''} {r.get('latency_s', 0):.2f}s" for r in results)
    return Verdict.passed(f"{len(results)} chat completion(s) answered: {lat}", {"results": results}, facts)


LATENCY_FLOOR_S = 0.25  # a spread whose slowest request stays under this is scheduling noise, not instability


def latency_verdict(latencies: dict[int, list[float]], spread_max: float, stop: bool) -> Verdict:
    """Latency stability (one of the guide's strong signals) over a few short, identical requests through each
    node: the slowest may take at most `spread_max` times as long as the fastest on the same node. Beyond it (and
    the slowest over LATENCY_FLOOR_S: milliseconds apart is noise): a warning, or a problem when `stop`. A node
    with fewer than two answered requests has no spread to judge."""
    spreads = {k: round(max(v) / max(min(v), 1e-3), 2) for k, v in sorted(latencies.items())
               if len(v) >= 2 and max(v) >= LATENCY_FLOOR_S}
    details = {"latencies_s": {f"node{k}": v for k, v in sorted(latencies.items())},
               "spread": {f"node{k}": x for k, x in spreads.items()}, "spread_max": spread_max}
    wide = [f"node{k}: the slowest of {len(latencies[k])} short requests took {x:.1f}x the fastest "
            f"({', '.join(f'{t:.2f}' for t in latencies[k])} s; bound {spread_max:g}x, --chat-spread-max)"
            for k, x in spreads.items() if x > spread_max]
    said = ", ".join(f"node{k} {x:.1f}x" for k, x in spreads.items())
    if stop:
        return Verdict.judged([f"latency not stable: {w}" for w in wide], f"latency stable: {said}", details)
    return Verdict.passed(f"latency stable: {said}" if not wide else f"latency spread above the bound: {said}",
                          details, warnings=[f"latency not stable: {w}" for w in wide])


def runner_map_lag(per_node: dict[int, InstanceProgress]) -> list[str]:
    """Nodes whose /state does not (yet) show the instance's runners Ready while chat works: evidence only."""
    out = []
    for k, p in sorted(per_node.items()):
        if not p.present:
            out.append(f"node{k}: instance absent from its /state")
        elif not p.ready:
            out.append(f"node{k}: runners {p.labels()}")
    return out

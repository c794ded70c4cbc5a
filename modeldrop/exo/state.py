"""Pure parsing of EXO's `/state` for both generations (camelCase or snake_case keys).

Rules (each is a pitfall the contract documents):
- Tagged unions are one-key objects keyed by the class name (`{"MlxRingInstance": {...}}`,
  `{"RunnerReady": {...}}`); `untag` also accepts the bare form. Match on the key, never the body
  (`RunnerReady` had no fields before 2026-04-28).
- Keys are camelCase in /state, snake_case in `/instance/await`; `pick` accepts either.
- Topology: v1.0.65+ is `{"nodes":[id...], "connections":{src:{sink:[edge...]}}}` (directed);
  before 2026-01-19 it was `{"nodes":[{"nodeId"...}], "connections":[{"localNodeId","sendBackNodeId"}]}`.
- Node membership: `nodeIdentities` (2026-01-19+) or `nodeProfiles` (older).
- Ring instances: `hostsByNode` + `ephemeralPort` (2025-12-23+) or a flat `hosts` list (older).
- Readiness accepts `RunnerReady` **or** `RunnerRunning`; only runner ids in `runnerToShard` count
  (stale `RunnerFailed` entries for other ids are ignored).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

READY_KINDS = frozenset({"RunnerReady", "RunnerRunning"})
FAILED_KIND = "RunnerFailed"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def pick(obj: Any, name: str, default: Any = None) -> Any:
    """obj[name] with name in camelCase, or its snake_case twin; default when neither is there."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(_snake(name), default)


def untag(obj: Any) -> tuple[str | None, dict]:
    """(class name, body) of a tagged union; (None, obj) for a bare object."""
    if isinstance(obj, dict) and len(obj) == 1:
        (k, v), = obj.items()
        if isinstance(k, str) and k[:1].isupper() and isinstance(v, dict):
            return k, v
    return None, obj if isinstance(obj, dict) else {}


# -- nodes and topology ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Topology:
    """Node ids and directed edges (source, sink) of one API's view; `rdma` the pairs with an RDMAConnection
    (`sourceRdmaIface`), `socket` those with a SocketConnection (`sinkMultiaddr`; every edge of the older shape)."""

    nodes: frozenset[str]
    edges: frozenset[tuple[str, str]]
    shape: str  # "adjacency" (2026-01-19+), "list" (older), "missing"
    socket: frozenset[tuple[str, str]] = frozenset()
    rdma: frozenset[tuple[str, str]] = frozenset()

    def both_ways(self, a: str, b: str) -> bool:
        return (a, b) in self.edges and (b, a) in self.edges

    def missing_edges(self, ids: list[str]) -> list[tuple[str, str]]:
        """Directed pairs among `ids` with no edge."""
        return [(a, b) for a in ids for b in ids if a != b and (a, b) not in self.edges]


def parse_topology(topo: Any) -> Topology:
    """Either topology shape -> Topology."""
    if not isinstance(topo, dict):
        return Topology(frozenset(), frozenset(), "missing")
    raw_nodes = topo.get("nodes") or []
    nodes = set()
    for n in raw_nodes:
        if isinstance(n, str):
            nodes.add(n)
        elif isinstance(n, dict):
            nid = pick(n, "nodeId")
            if nid:
                nodes.add(str(nid))
    conns = topo.get("connections")
    edges: set[tuple[str, str]] = set()
    socket: set[tuple[str, str]] = set()
    rdma: set[tuple[str, str]] = set()
    if isinstance(conns, dict):
        for src, sinks in conns.items():
            for sink, lst in (sinks or {}).items():
                pair = (str(src), str(sink))
                for edge in lst or []:
                    edges.add(pair)
                    if isinstance(edge, dict) and pick(edge, "sourceRdmaIface"):
                        rdma.add(pair)
                    elif isinstance(edge, dict) and pick(edge, "sinkMultiaddr"):
                        socket.add(pair)
        return Topology(frozenset(nodes), frozenset(edges), "adjacency", frozenset(socket), frozenset(rdma))
    for c in conns or []:
        a, b = pick(c, "localNodeId"), pick(c, "sendBackNodeId")
        if a and b:
            edges.add((str(a), str(b)))
    return Topology(frozenset(nodes), frozenset(edges), "list", frozenset(edges))


def node_identities(state: dict) -> dict[str, dict]:
    """{node id: identity} from nodeIdentities, else nodeProfiles (pre-2026-01-19)."""
    ids = pick(state, "nodeIdentities")
    if isinstance(ids, dict):
        return {str(k): (v if isinstance(v, dict) else {}) for k, v in ids.items()}
    prof = pick(state, "nodeProfiles")
    if isinstance(prof, dict):
        return {str(k): (v if isinstance(v, dict) else {}) for k, v in prof.items()}
    return {}


@dataclass(frozen=True)
class ClusterView:
    """One API's view of the cluster: who it sees and which directed edges exist."""

    identities: frozenset[str]
    memory: frozenset[str]
    topology: Topology
    friendly: dict[str, str] = field(default_factory=dict)
    rdma_ctl: dict[str, bool] | None = None  # nodeRdmaCtl (NEW): RDMA enabled per node; None when not reported

    @property
    def members(self) -> frozenset[str]:
        """Nodes this view knows: topology nodes, else identities."""
        return self.topology.nodes or self.identities

    def summary(self) -> dict:
        return {"identities": sorted(self.identities), "memory": sorted(self.memory),
                "topology_nodes": sorted(self.topology.nodes), "topology_shape": self.topology.shape,
                "edges": sorted(f"{a}->{b}" for a, b in self.topology.edges), "friendly": self.friendly}


def cluster_view(state: dict) -> ClusterView:
    """The membership and topology part of a /state."""
    idents = node_identities(state)
    mem = pick(state, "nodeMemory")
    friendly = {k: str(pick(v, "friendlyName") or "") for k, v in idents.items()}
    ctl = pick(state, "nodeRdmaCtl")
    rdma_ctl = {str(k): bool(pick(v, "enabled")) for k, v in ctl.items()} if isinstance(ctl, dict) else None
    return ClusterView(frozenset(idents), frozenset(mem or {}) if isinstance(mem, dict) else frozenset(),
                       parse_topology(pick(state, "topology")), friendly, rdma_ctl)


# -- instances ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    kind: str | None
    rank: int | None
    world_size: int | None
    start_layer: int | None
    end_layer: int | None
    n_layers: int | None


@dataclass(frozen=True)
class Instance:
    """One instance, unwrapped; `hosts_by_node[nid]` is a list of 'ip:port' strings indexed by rank."""

    instance_id: str
    kind: str | None  # MlxRingInstance | MlxJacclInstance | None (untagged)
    model_id: str | None
    node_to_runner: dict[str, str]
    runner_to_shard: dict[str, Shard]
    hosts_by_node: dict[str, list[str]]
    ephemeral_port: int | None
    flat_hosts: list[str]
    jaccl_coordinators: dict[str, str]

    @property
    def runner_ids(self) -> list[str]:
        return list(self.runner_to_shard) or list(self.node_to_runner.values())

    @property
    def node_ids(self) -> list[str]:
        return list(self.node_to_runner)

    @property
    def shard_count(self) -> int:
        """How many ranks the instance has by its shards (runnerToShard, or the largest worldSize)."""
        worlds = [s.world_size for s in self.runner_to_shard.values() if s.world_size]
        return max([len(self.runner_to_shard), *worlds]) if self.runner_to_shard else len(self.node_to_runner)

    @property
    def is_ring(self) -> bool:
        return bool(self.kind and "Ring" in self.kind) or bool(self.hosts_by_node or self.flat_hosts)

    def rank_of_node(self, nid: str) -> int | None:
        rid = self.node_to_runner.get(nid)
        shard = self.runner_to_shard.get(rid) if rid else None
        return shard.rank if shard else None


def _hostport(h: Any) -> str:
    if isinstance(h, str):
        return h
    if isinstance(h, dict):
        return f"{pick(h, 'ip')}:{pick(h, 'port')}"
    return str(h)


def _shard(obj: Any) -> Shard:
    kind, body = untag(obj)
    def num(name: str) -> int | None:
        v = pick(body, name)
        return int(v) if isinstance(v, (int, float)) else None
    return Shard(kind, num("deviceRank"), num("worldSize"), num("startLayer"), num("endLayer"), num("nLayers"))


def parse_instance(obj: Any, instance_id: str | None = None) -> Instance:
    """A tagged or bare instance (camel or snake) -> Instance."""
    kind, body = untag(obj)
    sa = pick(body, "shardAssignments") or {}
    hbn = pick(body, "hostsByNode") or {}
    coord = pick(body, "jacclCoordinators") or {}
    port = pick(body, "ephemeralPort")
    return Instance(
        instance_id=str(pick(body, "instanceId") or instance_id or ""),
        kind=kind,
        model_id=pick(sa, "modelId"),
        node_to_runner={str(k): str(v) for k, v in (pick(sa, "nodeToRunner") or {}).items()},
        runner_to_shard={str(k): _shard(v) for k, v in (pick(sa, "runnerToShard") or {}).items()},
        hosts_by_node={str(k): [_hostport(h) for h in (v or [])] for k, v in hbn.items()},
        ephemeral_port=int(port) if isinstance(port, (int, float)) else None,
        flat_hosts=[_hostport(h) for h in (pick(body, "hosts") or [])],
        jaccl_coordinators={str(k): str(v) for k, v in coord.items()} if isinstance(coord, dict) else {},
    )


def instances(state: dict) -> dict[str, Instance]:
    """{instance id: Instance} from /state.instances."""
    raw = pick(state, "instances") or {}
    return {str(k): parse_instance(v, str(k)) for k, v in raw.items()} if isinstance(raw, dict) else {}


def instances_for_model(state: dict, model_id: str) -> list[Instance]:
    return [i for i in instances(state).values() if i.model_id == model_id]


# -- runners --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunnerStatus:
    kind: str
    layers_loaded: int | None = None
    total_layers: int | None = None
    error_message: str | None = None
    diagnostics: tuple = ()

    @property
    def ready(self) -> bool:
        return self.kind in READY_KINDS

    @property
    def failed(self) -> bool:
        return self.kind == FAILED_KIND

    def label(self) -> str:
        if self.layers_loaded is not None:
            return f"{self.kind}({self.layers_loaded}/{self.total_layers})"
        return self.kind


def parse_runner(obj: Any) -> RunnerStatus:
    kind, body = untag(obj)
    if kind is None:  # bare form: {"status": "...", ...} is not exo's, but be tolerant
        kind = str(body.get("status") or body.get("kind") or "Unknown")
    ll, tl = pick(body, "layersLoaded"), pick(body, "totalLayers")
    diags = pick(body, "diagnostics") or []
    return RunnerStatus(kind, ll if isinstance(ll, int) else None, tl if isinstance(tl, int) else None,
                        pick(body, "errorMessage"), tuple(untag(d)[0] or str(d) for d in diags))


def runners(state: dict) -> dict[str, RunnerStatus]:
    raw = pick(state, "runners") or {}
    return {str(k): parse_runner(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


# -- downloads ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Download:
    node_id: str
    kind: str  # DownloadCompleted | DownloadOngoing | DownloadPending | DownloadFailed
    model_id: str | None
    model_directory: str | None
    error_message: str | None
    read_only: bool | None


def _shard_model_id(shard_meta: Any) -> str | None:
    _, body = untag(shard_meta)
    card = pick(body, "modelCard") or {}
    return pick(card, "modelId") or pick(body, "modelId")


def downloads(state: dict) -> list[Download]:
    out = []
    raw = pick(state, "downloads") or {}
    for nid, lst in (raw.items() if isinstance(raw, dict) else []):
        for entry in lst or []:
            kind, body = untag(entry)
            out.append(Download(str(nid), kind or "Unknown", _shard_model_id(pick(body, "shardMetadata")),
                                pick(body, "modelDirectory"), pick(body, "errorMessage"), pick(body, "readOnly")))
    return out


def downloads_for_model(state: dict, model_id: str) -> list[Download]:
    return [d for d in downloads(state) if d.model_id == model_id]


# -- readiness of one instance --------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceProgress:
    """How far an instance's runners are, seen from one /state."""

    instance_id: str
    present: bool
    statuses: dict[str, RunnerStatus]  # runner id -> status; missing ids are absent
    expected: list[str]
    where: dict[str, str] = field(default_factory=dict)  # runner id -> the node running it, as a person reads it

    def node_of(self, runner_id: str) -> str:
        """The node (friendly name and id prefix, or the shard's rank) of a runner, for messages."""
        return self.where.get(runner_id) or "unknown node"

    @property
    def ready(self) -> bool:
        return self.present and bool(self.expected) and all(
            r in self.statuses and self.statuses[r].ready for r in self.expected)

    @property
    def failures(self) -> dict[str, str]:
        return {r: (s.error_message or "RunnerFailed") for r, s in self.statuses.items() if s.failed}

    def key(self) -> tuple:
        """What counts as progress for the stall timer: every runner's status and layer count."""
        return tuple(sorted((r, s.kind, s.layers_loaded) for r, s in self.statuses.items()))

    def labels(self) -> dict[str, str]:
        return {r: (self.statuses[r].label() if r in self.statuses else "absent") for r in self.expected}


def instance_progress(state: dict, instance_id: str, names: dict[str, str] | None = None) -> InstanceProgress:
    """The instance's runners as this /state shows them; `names` ({node id: "node2 (user@host)"}) names each node
    by its configured name and target first."""
    inst = instances(state).get(instance_id)
    if inst is None:
        return InstanceProgress(instance_id, False, {}, [])
    rs = runners(state)
    expected = inst.runner_ids
    return InstanceProgress(instance_id, True, {r: rs[r] for r in expected if r in rs}, expected,
                            runner_locations(state, inst, names))


def node_label(friendly: dict[str, str], nid: str, names: dict[str, str] | None = None) -> str:
    """A node as a person reads it in a message: its configured name and target when known ("node2
    (user@host)"), then "friendly-name (node id prefix)" (two nodes on one host can share a friendly name)."""
    name = friendly.get(nid)
    exo = f"{name} (node {nid[:12]})" if name else f"node {nid[:12]}"
    configured = (names or {}).get(nid)
    return f"{configured}, {exo}" if configured else exo


def runner_locations(state: dict, inst: Instance, names: dict[str, str] | None = None) -> dict[str, str]:
    """{runner id: `node_label` of its node} from nodeToRunner; "rank N" when the map is empty."""
    friendly = cluster_view(state).friendly
    out = {}
    for nid, rid in inst.node_to_runner.items():
        out[rid] = node_label(friendly, nid, names)
    for rid, shard in inst.runner_to_shard.items():
        if rid not in out and shard.rank is not None:
            out[rid] = f"rank {shard.rank} (nodeToRunner does not say which node)"
    return out


# -- what a wait for readiness shows --------------------------------------------------------------
def download_progress(state: dict, model_id: str) -> dict[str, tuple[int, int]]:
    """{node id: (bytes downloaded, total bytes)} of the model's ongoing EXO downloads (DownloadOngoing)."""
    out: dict[str, tuple[int, int]] = {}
    raw = pick(state, "downloads") or {}
    for nid, lst in (raw.items() if isinstance(raw, dict) else []):
        for entry in lst or []:
            kind, body = untag(entry)
            prog = pick(body, "downloadProgress")
            if kind != "DownloadOngoing" or not isinstance(prog, dict) or \
                    _shard_model_id(pick(body, "shardMetadata")) != model_id:
                continue
            done, total = pick(pick(prog, "downloaded") or {}, "inBytes"), pick(pick(prog, "total") or {}, "inBytes")
            if isinstance(done, int) and isinstance(total, int):
                out[str(nid)] = (done, total)
    return out


def runner_progress(state: dict, instance_id: str, model_id: str, names: dict[str, str]) -> dict[str, str]:
    """{node: what its runner of the instance shows} for a progress line: `RunnerLoading 3/28 layers`, with EXO's
    download of the model on that node when one is ongoing; the node by `names` ({node id: name}), else as
    `node_label` reads it; `{"instance": "absent from /state"}` before the instance shows."""
    inst = instances(state).get(instance_id)
    if inst is None:
        return {"instance": "absent from /state"}
    rs, dls = runners(state), download_progress(state, model_id)
    friendly = cluster_view(state).friendly
    rank = {rid: sh.rank for rid, sh in inst.runner_to_shard.items()}
    by_runner = {rid: nid for nid, rid in inst.node_to_runner.items()}
    out: dict[str, str] = {}
    for rid in inst.runner_ids:
        nid = by_runner.get(rid)
        node = (names.get(nid) or node_label(friendly, nid)) if nid else f"rank {rank.get(rid)}"
        status = rs.get(rid)
        seen = "no runner in /state" if status is None else status.kind + (
            f" {status.layers_loaded}/{status.total_layers} layers" if status.layers_loaded is not None else "")
        if nid in dls:
            done, total = dls[nid]
            seen += f", EXO download {100 * done / max(total, 1):.0f}% of {total / 2**30:.2f} GiB"
        out[node] = seen
    return out

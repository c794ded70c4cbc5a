"""EXO's own placement over topologies we describe: run with the real-EXO install's Python (EXO and rustworkx
importable), JSON cases on stdin, one JSON answer per case on stdout.

Contract: a case is `{"nodes": [id, ...], "edges": [[source, sink, "socket"|"rdma"], ...], "meta": "MlxRing"|
"MlxJaccl", "sharding": "Pipeline"|"Tensor", "min_nodes": N, "rdma_ctl": bool, "ips": {id: ip}}`; nodes and
edges are added to EXO's `Topology` in the order given (rustworkx's cycle order follows insertion order).
EXO's `place_instance` runs over it with equal memory on every node, every node's backends `MlxMetal` and
`MlxCpu`, no downloads; the answer is `{"ok": true, "ranks": [node ids by device rank], "hosts_by_node":
{id: ["ip:port", ...]}, "coordinators": {id: "ip:port"}}` or `{"ok": false, "error": "<EXO's ValueError>"}`.
Used by the self-tests that hold our cluster rule and the emulator's placement to EXO's; never by a node.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from exo.master.placement import place_instance
from exo.shared.models.model_cards import ModelCard, ModelId, ModelTask
from exo.shared.topology import Topology
from exo.shared.types.backends import Backend
from exo.shared.types.commands import PlaceInstance
from exo.shared.types.common import NodeId
from exo.shared.types.memory import Memory
from exo.shared.types.multiaddr import Multiaddr
from exo.shared.types.profiling import MemoryUsage, NetworkInterfaceInfo, NodeNetworkInfo, NodeRdmaCtlStatus
from exo.shared.types.topology import Connection, RDMAConnection, SocketConnection
from exo.shared.types.worker.instances import InstanceMeta, MlxJacclInstance, MlxRingInstance
from exo.shared.types.worker.shards import Sharding

API_PORT = 52415
GB = 1024**3


def _card() -> ModelCard:
    return ModelCard(model_id=ModelId("modeldrop/oracle"), storage_size=Memory.from_bytes(GB), n_layers=8,
                     hidden_size=64, supports_tensor=True, tasks=[ModelTask.TextGeneration],
                     backends=[Backend.MlxMetal, Backend.MlxCpu])


def _edge(kind: str, sink_ip: str) -> SocketConnection | RDMAConnection:
    if kind == "rdma":
        return RDMAConnection(source_rdma_iface="rdma_en2", sink_rdma_iface="rdma_en3")
    return SocketConnection(sink_multiaddr=Multiaddr(address=f"/ip4/{sink_ip}/tcp/{API_PORT}"))


def place(case: dict[str, Any]) -> dict[str, Any]:
    """One case through EXO's `place_instance` (see the module docstring)."""
    nodes = [NodeId(n) for n in case["nodes"]]
    ips = {n: case.get("ips", {}).get(n) or f"10.0.0.{i + 1}" for i, n in enumerate(nodes)}
    topology = Topology()
    for n in nodes:
        topology.add_node(n)
    for src, sink, kind in case["edges"]:
        topology.add_connection(Connection(source=NodeId(src), sink=NodeId(sink), edge=_edge(kind, ips[sink])))
    memory = {n: MemoryUsage.from_bytes(ram_total=16 * GB, ram_available=8 * GB, swap_total=0, swap_available=0)
              for n in nodes}
    network = {n: NodeNetworkInfo(interfaces=[NetworkInterfaceInfo(name="en0", ip_address=ips[n])]) for n in nodes}
    command = PlaceInstance(model_card=_card(), sharding=Sharding(case.get("sharding", "Pipeline")),
                            instance_meta=InstanceMeta(case.get("meta", "MlxRing")),
                            min_nodes=int(case.get("min_nodes", len(nodes))))
    rdma = {n: NodeRdmaCtlStatus(enabled=bool(case.get("rdma_ctl", True))) for n in nodes}
    try:
        placed = place_instance(command, topology, {}, memory, network,
                                {n: [Backend.MlxMetal, Backend.MlxCpu] for n in nodes}, node_rdma_ctl=rdma)
    except ValueError as e:
        return {"ok": False, "error": str(e)}
    (instance,) = placed.values()
    shards = instance.shard_assignments
    ranks = sorted(shards.node_to_runner, key=lambda n: shards.runner_to_shard[shards.node_to_runner[n]].device_rank)
    out: dict[str, Any] = {"ok": True, "ranks": [str(n) for n in ranks], "kind": type(instance).__name__}
    if isinstance(instance, MlxRingInstance):
        out["hosts_by_node"] = {str(n): [f"{h.ip}:{h.port}" for h in hs] for n, hs in instance.hosts_by_node.items()}
        out["port"] = instance.ephemeral_port
    if isinstance(instance, MlxJacclInstance):
        out["coordinators"] = {str(n): c for n, c in instance.jaccl_coordinators.items()}
    return out


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(place(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()

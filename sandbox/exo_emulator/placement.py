"""exo's placement.

Contract: ``place(state, card, sharding, meta, min_nodes, required)`` returns one camelCase tagged
Instance or raises ``ValueError`` with exo's exact message. Cycles come in rustworkx's order (``cycles.py``,
over the order edges were added); among the smallest that fit, those with a leaf node win, then the first
with the best (download score, memory); rank order is that cycle's order, so the emulator ranks 3 and 4
nodes exactly as EXO would (``tests_selftest/unit/exo/test_placement_rule.py`` compares them with EXO's own
``place_instance``). 1-node results are forced to Pipeline/MlxRing; pipeline layers are split by available RAM.
"""

from __future__ import annotations

from typing import Any

from .cards import card_json
from .cycles import simple_cycles
from .ids import new_uuid, random_ephemeral_port
from .state import EDGE_ORDER

META_BACKENDS = {"MlxRing": {"MlxMetal", "MlxCuda", "MlxCpu"}, "MlxJaccl": {"MlxMetal"}}
PLACEHOLDER = {"ip": "198.51.100.1", "port": 0}


def get_cycles(state: dict[str, Any]) -> list[list[str]]:
    """EXO's ``Topology.get_cycles()`` for this state, in rustworkx's order (``cycles.py``): nodes in topology
    order, edges in the order they were added."""
    topo = state["topology"]
    order = state.get(EDGE_ORDER)
    if order is None:  # a state without the order (a /state body): its adjacency order
        order = [[a, b, e] for a, sinks in topo["connections"].items() for b, es in sinks.items() for e in es]
    return simple_cycles(topo["nodes"], [(a, b) for a, b, _ in order])


def _successors(conns: dict[str, dict[str, list]], n: str) -> set[str]:
    return {m for m, edges in conns.get(n, {}).items() if edges}


def _has_leaf(conns: dict[str, dict[str, list]], cycle: list[str]) -> bool:
    """EXO's ``node_is_leaf``: at most one neighbour (rustworkx ``neighbors``: successors)."""
    return any(len(_successors(conns, n)) <= 1 for n in cycle)


def _avail(state: dict[str, Any], nid: str) -> int:
    return int(state["nodeMemory"][nid]["ramAvailable"]["inBytes"])


def allocate_layers(total: int, fractions: list[float]) -> list[int]:
    n = len(fractions)
    if total < n:
        raise ValueError(f"Cannot distribute {total} layers across {n} nodes (need at least 1 layer per node)")
    raw = [f * total for f in fractions]
    res = [int(r) for r in raw]
    for i in sorted(range(n), key=lambda i: raw[i] - res[i], reverse=True)[: total - sum(res)]:
        res[i] += 1
    for i in range(n):
        if res[i] == 0:
            big = max(range(n), key=lambda j: res[j])
            res[big] -= 1
            res[i] = 1
    return res


def _shards(state: dict, card: dict, cycle: list[str], sharding: str, generation: str) -> dict[str, Any]:
    total_mem = sum(_avail(state, n) for n in cycle)
    n_layers = card["n_layers"]
    if sharding == "Tensor":
        spans = [(0, n_layers)] * len(cycle)
    else:
        alloc = allocate_layers(n_layers, [_avail(state, n) / total_mem for n in cycle])
        storage = card["storage_size"]["in_bytes"]
        for i, nid in enumerate(cycle):
            need = storage * alloc[i] // n_layers
            if need > _avail(state, nid):
                raise ValueError(f"Node {i} ({nid}) has insufficient memory: requires {need / 1024**3:.2f} GB "
                                 f"for {alloc[i]} layers, but only has {_avail(state, nid) / 1024**3:.2f} GB available")
        starts = [sum(alloc[:i]) for i in range(len(cycle))]
        spans = [(starts[i], starts[i] + alloc[i]) for i in range(len(cycle))]
    kind = "TensorShardMetadata" if sharding == "Tensor" else "PipelineShardMetadata"
    runner_to_shard: dict[str, Any] = {}
    node_to_runner: dict[str, str] = {}
    for rank, nid in enumerate(cycle):
        rid = new_uuid()
        runner_to_shard[rid] = {kind: {
            "modelCard": card_json(card, generation), "deviceRank": rank, "worldSize": len(cycle),
            "immediateException": False, "shouldTimeout": None, "startLayer": spans[rank][0],
            "endLayer": spans[rank][1], "nLayers": n_layers}}
        node_to_runner[nid] = rid
    return {"modelId": card["model_id"], "runnerToShard": runner_to_shard, "nodeToRunner": node_to_runner}


def _edge_ip(conns: dict, src: str, dst: str) -> str | None:
    for edge in conns.get(src, {}).get(dst, []):
        addr = edge.get("sinkMultiaddr")
        if addr and addr.get("address_type") == "ip4":
            return addr["ip_address"]
    return None


def hosts_by_node(cycle: list[str], conns: dict, port: int) -> dict[str, list[dict[str, Any]]]:
    """Per-node host list indexed by rank: self 0.0.0.0:P, neighbours ip:P, others placeholder."""
    n = len(cycle)
    out: dict[str, list[dict[str, Any]]] = {}
    for rank, nid in enumerate(cycle):
        hosts: list[dict[str, Any]] = []
        for idx, other in enumerate(cycle):
            if idx == rank:
                hosts.append({"ip": "0.0.0.0", "port": port})
            elif idx not in {(rank - 1) % n, (rank + 1) % n}:
                hosts.append(dict(PLACEHOLDER))
            else:
                ip = _edge_ip(conns, nid, other)
                if ip is None:
                    raise ValueError("MLX ring backend requires connectivity between neighbouring nodes")
                hosts.append({"ip": ip, "port": port})
        out[nid] = hosts
    return out


def _download_fraction(state: dict, nid: str, model_id: str) -> float:
    """EXO's ``_get_node_download_fraction``: the node's first download entry for the model, as a fraction."""
    for dl in state["downloads"].get(nid, []):
        kind, body = next(iter(dl.items()))
        if next(iter(body["shardMetadata"].values()))["modelCard"]["modelId"] != model_id:
            continue
        if kind == "DownloadCompleted":
            return 1.0
        prog = body.get("downloadProgress", body) if kind in ("DownloadOngoing", "DownloadPending") else {}
        total = int((prog.get("total") or {}).get("inBytes") or 0)
        return int((prog.get("downloaded") or {}).get("inBytes") or 0) / total if total > 0 else 0.0
    return 0.0


def _download_score(state: dict, cycle: list[str], model_id: str) -> float:
    return sum(_download_fraction(state, nid, model_id) for nid in cycle)


def _filter_cycles(state: dict, card: dict, sharding: str, meta: str, min_nodes: int,
                   required: set[str] | None) -> list[list[str]]:
    cycles = [c for c in get_cycles(state) if len(c) >= min_nodes]
    if required:
        cycles = [c for c in cycles if required.issubset(c)]
    storage = card["storage_size"]["in_bytes"]
    cycles = [c for c in cycles if all(n in state["nodeMemory"] for n in c)
              and sum(_avail(state, n) for n in c) >= storage]
    if not cycles:
        raise ValueError("No cycles found with sufficient memory")
    if sharding == "Tensor":
        if not card["supports_tensor"]:
            raise ValueError("Requested Tensor sharding but this model does not support tensor parallelism: "
                             f"{card['model_id']}")
        kv = card.get("num_key_value_heads")
        cycles = [c for c in cycles if card["hidden_size"] % len(c) == 0 and (kv is None or kv % len(c) == 0)]
        if not cycles:
            kvs = f", num_key_value_heads={kv}" if kv is not None else ""
            raise ValueError(f"No tensor sharding found for model with hidden_size={card['hidden_size']}{kvs} "
                             "across candidate cycles")
    smallest = min(len(c) for c in cycles)
    return [c for c in cycles if len(c) == smallest]


def place(state: dict[str, Any], card: dict[str, Any], sharding: str, meta: str, min_nodes: int,
          generation: str, required: set[str] | None = None) -> dict[str, Any]:
    """Compute one new instance (tagged, camelCase) or raise ValueError."""
    cycles = _filter_cycles(state, card, sharding, meta, min_nodes, required)
    backends = META_BACKENDS[meta] & set(card.get("backends") or [])
    if not backends:
        raise ValueError(f"Model {card['model_id']} backends {sorted(card.get('backends') or [])} cannot satisfy "
                         f"engine {meta} which requires {sorted(META_BACKENDS[meta])}")
    if generation == "new":
        cycles = [c for c in cycles if all(set(state["nodeBackends"].get(n, [])) & backends for n in c)]
        if not cycles:
            raise ValueError(f"No cycle where every node supports a backend in {sorted(backends)} "
                             f"for {card['model_id']}")
    if meta == "MlxJaccl":
        rdma = [c for c in cycles if _is_rdma_cycle(state, c, generation)]
        if not rdma:
            raise ValueError("Requested RDMA (MlxJaccl) but no RDMA-connected cycles available")
        cycles = rdma
    conns = state["topology"]["connections"]
    cycles = [c for c in cycles if _has_leaf(conns, c)] or cycles
    cycle = max(cycles, key=lambda c: (_download_score(state, c, card["model_id"]), sum(_avail(state, n) for n in c)))
    if len(cycle) == 1:
        sharding, meta = "Pipeline", "MlxRing"
    assignments = _shards(state, card, cycle, sharding, generation)
    port = random_ephemeral_port()
    body = {"instanceId": new_uuid(), "shardAssignments": assignments}
    if meta == "MlxJaccl":  # the emulator's nodes have no RDMA, so only a state with RDMA edges gets here
        body["jacclDevices"] = jaccl_devices(cycle, conns)
        body["jacclCoordinators"] = jaccl_coordinators(cycle, conns, port)
        return {"MlxJacclInstance": body}
    body["hostsByNode"] = hosts_by_node(cycle, state["topology"]["connections"], port)
    body["ephemeralPort"] = port
    return {"MlxRingInstance": body}


def jaccl_devices(cycle: list[str], conns: dict) -> list[list[str | None]]:
    """``jacclDevices[i][j]``: rank i's RDMA interface towards rank j (None on the diagonal)."""
    def iface(a: str, b: str) -> str | None:
        return next((e["sourceRdmaIface"] for e in conns.get(a, {}).get(b, []) if "sourceRdmaIface" in e), None)
    return [[None if i == j else iface(a, b) for j, b in enumerate(cycle)] for i, a in enumerate(cycle)]


def jaccl_coordinators(cycle: list[str], conns: dict, port: int) -> dict[str, str]:
    """Rank 0 listens on ``0.0.0.0:P``; every other rank reaches it at rank 0's address as it sees it."""
    out = {cycle[0]: f"0.0.0.0:{port}"}
    for nid in cycle[1:]:
        out[nid] = f"{_edge_ip(conns, nid, cycle[0]) or '0.0.0.0'}:{port}"
    return out


def _is_rdma_cycle(state: dict, cycle: list[str], generation: str) -> bool:
    """RDMA edges between every pair (vacuous for one node); NEW also gates on nodeRdmaCtl.enabled."""
    conns = state["topology"]["connections"]
    for a in cycle:
        for b in cycle:
            if a != b and not any("sourceRdmaIface" in e for e in conns.get(a, {}).get(b, [])):
                return False
    if generation != "new":
        return True
    return all(state["nodeRdmaCtl"].get(n, {}).get("enabled") for n in cycle)


def previews(state: dict[str, Any], card: dict[str, Any], generation: str,
             required: set[str] | None) -> list[dict[str, Any]]:
    """``/instance/previews`` entries, deduplicated like exo's."""
    n_nodes = len(state["topology"]["nodes"])
    if n_nodes == 0:
        return []
    seen: set[tuple[str, str, int]] = set()
    out: list[dict[str, Any]] = []
    for sharding in ("Pipeline", "Tensor"):
        for meta in ("MlxRing", "MlxJaccl"):
            for k in range(1, n_nodes + 1):
                try:
                    inst = place(state, card, sharding, meta, k, generation, required)
                except ValueError as exc:
                    if (sharding, meta, 0) not in seen:
                        out.append({"model_id": card["model_id"], "sharding": sharding, "instance_meta": meta,
                                    "instance": None, "memory_delta_by_node": None, "error": str(exc)})
                    seen.add((sharding, meta, 0))
                    continue
                nodes = list(next(iter(inst.values()))["shardAssignments"]["nodeToRunner"])
                if (sharding, meta, len(nodes)) in seen:
                    continue
                seen.add((sharding, meta, len(nodes)))
                total = card["storage_size"]["in_bytes"]
                delta = {n: total // len(nodes) + (1 if i < total % len(nodes) else 0)
                         for i, n in enumerate(sorted(nodes))}
                out.append({"model_id": card["model_id"], "sharding": sharding, "instance_meta": meta,
                            "instance": inst, "memory_delta_by_node": delta, "error": None})
    return out

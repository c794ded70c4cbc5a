"""The replicated cluster state and the events that change it.

Contract: the master appends events to its log; every node (master included) applies the same
events in index order with ``State.apply``; ``State.to_json(generation)`` is the camelCase
``/state`` body with exactly the top-level keys real exo's has for that generation.
Events are plain dicts ``{"type": ..., ...}`` so they cross the cluster link as JSON.
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

NEW_KEYS = ("instances", "runners", "downloads", "tasks", "lastSeen", "topology", "lastEventAppliedIdx",
            "nodeIdentities", "nodeMemory", "nodeDisk", "nodeSystem", "nodeNetwork", "nodeThunderbolt",
            "nodeThunderboltBridge", "nodeRdmaCtl", "nodeBackends", "thunderboltBridgeCycles",
            "instanceLinks", "prefillServerPorts", "customModelCards")
OLD_ONLY_MISSING = ("nodeBackends", "instanceLinks", "prefillServerPorts", "customModelCards")
NODE_MAPS = ("nodeIdentities", "nodeMemory", "nodeDisk", "nodeSystem", "nodeNetwork", "nodeThunderbolt",
             "nodeThunderboltBridge", "nodeRdmaCtl", "nodeBackends")
INFO_FIELDS = {"identity": "nodeIdentities", "memory": "nodeMemory", "disk": "nodeDisk",
               "system": "nodeSystem", "network": "nodeNetwork", "thunderbolt": "nodeThunderbolt",
               "thunderboltBridge": "nodeThunderboltBridge", "rdmaCtl": "nodeRdmaCtl", "backends": "nodeBackends"}
# Not in /state: every topology edge [source, sink, edge] in the order it was added, as EXO's rustworkx graph
# holds them (its cycle order, and so placement's rank order, follows it; see cycles.py).
EDGE_ORDER = "_edgeOrder"


def utc_stamp(epoch_s: float | None = None) -> str:
    """An EXO ``lastSeen`` timestamp (ISO 8601, microseconds, ``Z``) for ``epoch_s`` (default now)."""
    return datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unwrap(tagged: dict[str, Any]) -> dict[str, Any]:
    """The body of a one-key tagged union object."""
    return next(iter(tagged.values()))


def tag(tagged: dict[str, Any]) -> str:
    return next(iter(tagged))


class State:
    """exo's State, kept directly in its camelCase wire form."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = self.empty()

    @staticmethod
    def empty() -> dict[str, Any]:
        d: dict[str, Any] = {k: {} for k in NEW_KEYS}
        d["topology"] = {"nodes": [], "connections": {}}
        d["lastEventAppliedIdx"] = -1
        d["thunderboltBridgeCycles"] = []
        d[EDGE_ORDER] = []
        return d

    def reset(self) -> None:
        self.data = self.empty()

    def to_json(self, generation: str) -> dict[str, Any]:
        out = copy.deepcopy(self.data)
        out.pop(EDGE_ORDER, None)
        if generation != "new":
            for k in OLD_ONLY_MISSING:
                out.pop(k, None)
        return out

    # ---- queries -------------------------------------------------------------------------------
    def instance_bodies(self) -> dict[str, dict[str, Any]]:
        return {iid: unwrap(inst) for iid, inst in self.data["instances"].items()}

    def node_ids(self) -> list[str]:
        return list(self.data["topology"]["nodes"])

    # ---- apply ---------------------------------------------------------------------------------
    def apply(self, idx: int, event: dict[str, Any]) -> None:
        handler = getattr(self, "_on_" + event["type"], None)
        if handler is not None:
            handler(event)
        self.data["lastEventAppliedIdx"] = idx

    def _on_NodeInfo(self, e: dict[str, Any]) -> None:
        nid = e["nodeId"]
        topo = self.data["topology"]
        if nid not in topo["nodes"]:
            topo["nodes"].append(nid)
        for field, key in INFO_FIELDS.items():
            if field in e:
                self.data[key][nid] = e[field]
        if "when" in e:  # as EXO's apply_node_gathered_info: a node in the topology always has a lastSeen
            self.data["lastSeen"][nid] = e["when"]

    def _on_LastSeen(self, e: dict[str, Any]) -> None:
        for nid, stamp in e["times"].items():
            if nid in self.data["topology"]["nodes"]:
                self.data["lastSeen"][nid] = stamp

    def _on_NodeTimedOut(self, e: dict[str, Any]) -> None:
        nid = e["nodeId"]
        topo = self.data["topology"]
        if nid in topo["nodes"]:
            topo["nodes"].remove(nid)
        topo["connections"].pop(nid, None)
        for sinks in topo["connections"].values():
            sinks.pop(nid, None)
        self.data[EDGE_ORDER] = [x for x in self.data[EDGE_ORDER] if nid not in x[:2]]
        for key in (*NODE_MAPS, "lastSeen", "downloads"):
            self.data[key].pop(nid, None)

    def _on_EdgeCreated(self, e: dict[str, Any]) -> None:
        topo = self.data["topology"]
        if e["source"] not in topo["nodes"] or e["sink"] not in topo["nodes"]:
            return
        edges = topo["connections"].setdefault(e["source"], {}).setdefault(e["sink"], [])
        if e["edge"] not in edges:
            edges.append(e["edge"])
            self.data[EDGE_ORDER].append([e["source"], e["sink"], e["edge"]])

    def _on_EdgeDeleted(self, e: dict[str, Any]) -> None:
        conns = self.data["topology"]["connections"]
        edges = conns.get(e["source"], {}).get(e["sink"])
        if edges is None:
            return
        if e["edge"] in edges:
            edges.remove(e["edge"])
            self.data[EDGE_ORDER].remove([e["source"], e["sink"], e["edge"]])
        if not edges:
            del conns[e["source"]][e["sink"]]
        if not conns[e["source"]]:
            del conns[e["source"]]

    def _on_InstanceCreated(self, e: dict[str, Any]) -> None:
        inst = e["instance"]
        self.data["instances"][unwrap(inst)["instanceId"]] = inst

    def _on_InstanceDeleted(self, e: dict[str, Any]) -> None:
        self.data["instances"].pop(e["instanceId"], None)
        for _tid, task in list(self.data["tasks"].items()):
            body = unwrap(task)
            if body.get("instanceId") == e["instanceId"] and body.get("taskStatus") in ("Pending", "Running"):
                body["taskStatus"] = "Cancelled"

    def _on_RunnerStatus(self, e: dict[str, Any]) -> None:
        self.data["runners"][e["runnerId"]] = e["status"]

    def _on_RunnerDeleted(self, e: dict[str, Any]) -> None:
        self.data["runners"].pop(e["runnerId"], None)

    def _on_Download(self, e: dict[str, Any]) -> None:
        nid = e["nodeId"]
        progress = e["progress"]
        model_id = unwrap(unwrap(progress)["shardMetadata"])["modelCard"]["modelId"]
        entries = self.data["downloads"].setdefault(nid, [])
        for i, old in enumerate(entries):
            if unwrap(unwrap(old)["shardMetadata"])["modelCard"]["modelId"] == model_id:
                entries[i] = progress
                return
        entries.append(progress)

    def _on_TaskCreated(self, e: dict[str, Any]) -> None:
        task = e["task"]
        self.data["tasks"][unwrap(task)["taskId"]] = task

    def _on_TaskStatus(self, e: dict[str, Any]) -> None:
        task = self.data["tasks"].get(e["taskId"])
        if task is not None:
            unwrap(task)["taskStatus"] = e["status"]

    def _on_TaskDeleted(self, e: dict[str, Any]) -> None:
        self.data["tasks"].pop(e["taskId"], None)

    def _on_CustomCard(self, e: dict[str, Any]) -> None:
        self.data["customModelCards"][e["card"]["modelId"]] = e["card"]

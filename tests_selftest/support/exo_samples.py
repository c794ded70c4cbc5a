"""JSON samples written from reference/exo-contract.md §2.2-§3 (both generations), for the unit tests."""

from __future__ import annotations

import copy

A = "3f2a9c1b7d4e5f60718293a4b5c6d7e8"
B = "1c0f2e3d4c5b6a798877665544335678"
R0, R1 = "809066c7-aaaa-bbbb-cccc-000000000000", "1c439115-aaaa-bbbb-cccc-111111111111"
IID = "1914ee8e-0000-1111-2222-333333333333"
MODEL = "mlx-community/Llama-3.2-1B-Instruct-4bit"
CARD = {"modelId": MODEL, "storageSize": {"inBytes": 729808896}, "nLayers": 16}


def shard(rank: int, start: int, end: int) -> dict:
    return {"PipelineShardMetadata": {"modelCard": CARD, "deviceRank": rank, "worldSize": 2, "immediateException": False,
                                      "shouldTimeout": None, "startLayer": start, "endLayer": end, "nLayers": 16}}


RING_INSTANCE = {"MlxRingInstance": {
    "instanceId": IID,
    "shardAssignments": {"modelId": MODEL, "runnerToShard": {R0: shard(0, 0, 8), R1: shard(1, 8, 16)},
                         "nodeToRunner": {B: R0, A: R1}},
    "hostsByNode": {B: [{"ip": "0.0.0.0", "port": 51572}, {"ip": "192.168.1.10", "port": 51572}],
                    A: [{"ip": "192.168.1.11", "port": 51572}, {"ip": "0.0.0.0", "port": 51572}]},
    "ephemeralPort": 51572}}

EDGE = {"sinkMultiaddr": {"address": "/ip4/192.168.1.11/tcp/52415", "address_type": "ip4",
                          "ip_address": "192.168.1.11", "port": 52415}}

NEW_STATE = {
    "instances": {IID: RING_INSTANCE},
    "runners": {R0: {"RunnerReady": {"prefillServerPort": None}}, R1: {"RunnerRunning": {}}},
    "downloads": {A: [{"DownloadCompleted": {"nodeId": A, "shardMetadata": shard(1, 8, 16),
                                             "modelDirectory": "/Users/me/.exo/models/mlx-community--Llama-3.2-1B-Instruct-4bit",
                                             "total": {"inBytes": 729808896}, "readOnly": True}}],
                  B: [{"DownloadOngoing": {"nodeId": B, "shardMetadata": shard(0, 0, 8), "modelDirectory": "/x",
                                           "downloadProgress": {"total": {"inBytes": 1}, "downloaded": {"inBytes": 0}}}}]},
    "tasks": {}, "lastSeen": {A: "2026-06-22T14:58:20.279185Z", B: "2026-06-22T14:58:20.279185Z"},
    "topology": {"nodes": [A, B], "connections": {A: {B: [EDGE, {"sourceRdmaIface": "rdma_en3", "sinkRdmaIface": "rdma_en4"}]},
                                                  B: {A: [EDGE]}}},
    "lastEventAppliedIdx": 42,
    "nodeIdentities": {A: {"modelId": "Mac Studio", "chipId": "Apple M3 Ultra", "friendlyName": "studio-1",
                           "osVersion": "15.5", "osBuildVersion": "24F74"},
                       B: {"modelId": "Mac Studio", "chipId": "Apple M3 Ultra", "friendlyName": "studio-2",
                           "osVersion": "15.5", "osBuildVersion": "24F74"}},
    "nodeMemory": {A: {"ramTotal": {"inBytes": 68719476736}, "ramAvailable": {"inBytes": 42949672960}},
                   B: {"ramTotal": {"inBytes": 68719476736}, "ramAvailable": {"inBytes": 42949672960}}},
    "nodeBackends": {A: ["MlxCpu", "MlxMetal"], B: ["MlxCpu", "MlxMetal"]},
}

# v1.0.63 and earlier: nodeProfiles, list topology, flat ring hosts, bare RunnerReady.
OLD_STATE = {
    "instances": {IID: {"MlxRingInstance": {
        "instanceId": IID,
        "shardAssignments": {"modelId": MODEL, "runnerToShard": {R0: shard(0, 0, 8), R1: shard(1, 8, 16)},
                             "nodeToRunner": {B: R0, A: R1}},
        "hosts": [{"ip": "192.168.1.10", "port": 51572}, {"ip": "192.168.1.11", "port": 51572}]}}},
    "runners": {R0: {"RunnerReady": {}}, R1: {"RunnerLoading": {"layersLoaded": 3, "totalLayers": 8}}},
    "downloads": {},
    "topology": {"nodes": [{"nodeId": A, "nodeProfile": {}}, {"nodeId": B, "nodeProfile": {}}],
                 "connections": [{"localNodeId": A, "sendBackNodeId": B, "sendBackMultiaddr": {}, "connectionProfile": None}]},
    "nodeProfiles": {A: {"friendlyName": "studio-1"}, B: {"friendlyName": "studio-2"}},
}

# /instance/await payload: snake_case, tagged.
AWAIT_INSTANCE = {"MlxRingInstance": {
    "instance_id": IID,
    "shard_assignments": {"model_id": MODEL, "runner_to_shard": {R0: shard(0, 0, 8)}, "node_to_runner": {B: R0}},
    "hosts_by_node": {B: [{"ip": "0.0.0.0", "port": 51572}]}, "ephemeral_port": 51572}}

JACCL_INSTANCE = {"MlxJacclInstance": {
    "instanceId": IID,
    "shardAssignments": {"modelId": MODEL, "runnerToShard": {R0: shard(0, 0, 16), R1: shard(1, 0, 16)},
                         "nodeToRunner": {A: R0, B: R1}},
    "jacclDevices": [[None, "rdma_en3"], ["rdma_en3", None]],
    "jacclCoordinators": {A: "0.0.0.0:64618", B: "10.0.0.3:64618"}}}


def new_state(**over) -> dict:
    s = copy.deepcopy(NEW_STATE)
    s.update(over)
    return s

"""EXO emulator clusters: discovery, isolation, /state shapes, topology edges, placement errors over HTTP."""

from __future__ import annotations

import time

import pytest

from tests_selftest.support.emulator_fixtures import (  # noqa: F401
    MODEL_ID,
    emu_factory,
    fresh_subnet,
    instance_body,
    new_pair,
    tiny_model,
    wait_cluster,
    wait_for,
)

# contract §2.2 per-node map bodies
IDENTITY_KEYS = {"modelId", "chipId", "friendlyName", "osVersion", "osBuildVersion"}
MEMORY_KEYS = {"ramTotal", "ramAvailable", "swapTotal", "swapAvailable"}
MULTIADDR_KEYS = {"address", "address_type", "ip_address", "port"}


def test_pair_state_shapes_and_master(new_pair) -> None:  # noqa: F811
    a, b = new_pair
    ids = [a.node_id(), b.node_id()]
    s = a.state()
    assert "nodeBackends" in s and "customModelCards" in s
    for nid in ids:
        assert set(s["nodeIdentities"][nid]) == IDENTITY_KEYS
        assert set(s["nodeMemory"][nid]) == MEMORY_KEYS
        assert set(s["nodeMemory"][nid]["ramAvailable"]) == {"inBytes"}
        assert set(s["nodeDisk"][nid]) == {"total", "available"}
        assert s["nodeRdmaCtl"][nid] == {"enabled": False}
        assert {i["interfaceType"] for i in s["nodeNetwork"][nid]["interfaces"]} <= {
            "wifi", "ethernet", "maybe_ethernet", "thunderbolt", "unknown"}
        assert s["lastSeen"][nid].endswith("Z")
    edge = s["topology"]["connections"][ids[0]][ids[1]][0]
    assert set(edge) == {"sinkMultiaddr"} and set(edge["sinkMultiaddr"]) == MULTIADDR_KEYS
    assert edge["sinkMultiaddr"]["address"] == f"/ip4/{b.address}/tcp/52415"
    assert edge["sinkMultiaddr"]["port"] == 52415 and edge["sinkMultiaddr"]["ip_address"] == b.address
    logs = [a.log(), b.log()]
    assert sum("Node elected Master - promoting self" in lg for lg in logs) == 1
    master = ids[0] if "promoting self" in logs[0] else ids[1]
    assert any(f"Node {master} elected master" in lg for lg in logs)
    # followers mirror the master's state
    sb = b.state()
    assert sb["topology"]["nodes"] == s["topology"]["nodes"] or sorted(sb["topology"]["nodes"]) == sorted(ids)
    assert b.get("/state/nodeIdentities")[1] == sb["nodeIdentities"]
    assert b.get(f"/state/nodeMemory/{ids[0]}/ramTotal")[1] == {"inBytes": 17179869184}


def test_pair_api_errors(new_pair) -> None:  # noqa: F811
    a, b = new_pair
    assert isinstance(a.get("/node_id")[1], str)
    code, body = a.get(f"/instance/placement?model_id={MODEL_ID}&min_nodes=3")
    assert code == 400
    assert body == {"error": {"message": "No cycles found with sufficient memory", "type": "Bad Request",
                              "param": None, "code": 400}}
    code, body = a.get(f"/instance/placement?model_id={MODEL_ID}&instance_meta=MlxRingInstance")
    assert code == 422 and body["detail"][0]["loc"] == ["query", "instance_meta"]
    code, body = a.get(f"/instance/placement?model_id={MODEL_ID}&sharding=Tensor")
    assert code == 400 and body["error"]["message"] == (
        f"Requested Tensor sharding but this model does not support tensor parallelism: {MODEL_ID}")
    assert a.get("/instance/placement")[0] == 422
    code, body = a.get("/instance/nope")
    assert code == 404 and body["error"] == {"message": "Instance not found", "type": "Not Found", "param": None,
                                             "code": 404}
    assert http_delete(a, "/instance/nope")[0] == 404
    code, body = a.get("/state/nodeIdentities/nobody")
    assert code == 404 and body["error"]["message"] == "unable to find path 'nodeIdentities.nobody' in state json"
    code, body = a.post("/v1/chat/completions", {"model": "x/y", "messages": [{"role": "user", "content": "hi"}]})
    assert code == 404 and body["error"]["message"] == "No instance found for model x/y"
    assert a.post("/v1/chat/completions", {"messages": []})[0] == 422
    assert a.get("/no/such/page")[0] == 404 and a.get("/")[0] == 200
    assert a.get("/health")[0] == 404 and a.get("/ollama/api/version")[1] == {"version": "1.0.0"}
    code, models = a.get("/v1/models?status=downloaded")
    assert code == 200 and [m["id"] for m in models["data"]] == [MODEL_ID]
    all_ids = [m["id"] for m in a.get("/models")[1]["data"]]
    assert "mlx-community/Llama-3.2-1B-Instruct-4bit" in all_ids and MODEL_ID in all_ids
    code, prev = a.get(f"/instance/previews?model_id={MODEL_ID}")
    assert code == 200 and any(p["error"] is None for p in prev["previews"])
    # POST /instance checks the card's size against the cluster-wide ramAvailable (2 x 12 GiB here)
    code, inst = a.get(f"/instance/placement?model_id={MODEL_ID}&min_nodes=1")
    assert code == 200
    instance_body(inst)["shardAssignments"]["modelId"] = "mlx-community/Qwen3.5-122B-A10B-4bit"  # 64.8 GiB card
    code, body = a.post("/instance", {"instance": inst})
    assert code == 400
    assert body["error"]["message"] == "Insufficient memory to create instance. Required: 64.8GB, Available: 24.0GB"
    assert a.get("/instance/placement?model_id=nobody/unknown")[0] == 500  # card fetch needs HF
    assert a.get("/instance/previews?model_id=nobody/unknown")[1]["error"]["message"].startswith(
        "Failed to load model card: ")
    # async placement failure: 200 and only the master's log knows
    code, body = a.post("/place_instance", {"model_id": MODEL_ID, "min_nodes": 3})
    assert code == 200 and body["message"] == "Command received." and "command_id" in body
    wait_for(lambda: any("Error in command processor" in n.log() for n in new_pair), 10, "command error in log")
    assert a.state()["instances"] == {}


def http_delete(node, path: str):
    from tests_selftest.support.emulator_fixtures import http

    return http("DELETE", node.url + path)


def test_old_generation_pair_and_namespace_isolation(emu_factory) -> None:  # noqa: F811
    sub = fresh_subnet()
    addrs = [f"127.{sub}.{11 + i}" for i in range(3)]
    nodes = [emu_factory(f"o{i}", addrs[i], addrs, generation="old", layout="linux") for i in range(3)]
    t0 = time.monotonic()
    nodes[0].start(env={"EXO_LIBP2P_NAMESPACE": "blue"})
    nodes[1].start(env={"EXO_LIBP2P_NAMESPACE": "blue"})
    nodes[2].start(env={"EXO_LIBP2P_NAMESPACE": "red"})
    ids = wait_cluster(nodes[:2])
    print(f"OLD 2-node cluster with edges in {time.monotonic() - t0:.2f}s")
    s = nodes[0].state()
    assert not {"nodeBackends", "instanceLinks", "prefillServerPorts", "customModelCards"} & set(s)
    assert all(i.startswith("12D3KooW") for i in ids)
    red = nodes[2].node_id()
    assert red not in nodes[0].state()["nodeIdentities"]
    assert list(nodes[2].state()["nodeIdentities"]) == [red]
    assert "Node elected Master - promoting self" in nodes[2].log()


def test_new_namespace_flag_isolation_and_isolated_fault(emu_factory) -> None:  # noqa: F811
    sub = fresh_subnet()
    addrs = [f"127.{sub}.{11 + i}" for i in range(4)]
    a = emu_factory("a", addrs[0], addrs).start("--namespace", "team1")
    b = emu_factory("b", addrs[1], addrs).start("--namespace", "team1")
    c = emu_factory("c", addrs[2], addrs).start("--namespace", "team2")
    d = emu_factory("d", addrs[3], addrs, faults={"isolated": True}).start("--namespace", "team1")
    e = emu_factory("e", f"127.{sub}.15", [*addrs, f"127.{sub}.15"],
                    faults={"namespace": "other"}).start("--namespace", "team1")
    wait_cluster([a, b])
    wait_for(lambda: all("Unpausing API" in n.log() for n in (c, d, e)), 20, "c, d, e up")
    for lone in (c, d, e):
        assert list(lone.state()["nodeIdentities"]) == [lone.node_id()]
        assert lone.node_id() not in a.state()["nodeIdentities"]


def test_no_api_breaks_edges_toward_that_node(emu_factory) -> None:  # noqa: F811
    sub = fresh_subnet()
    addrs = [f"127.{sub}.11", f"127.{sub}.12"]
    a = emu_factory("a", addrs[0], addrs).start()
    b = emu_factory("b", addrs[1], addrs).start("--no-api")
    a_id = a.node_id()

    def two_nodes() -> list[str] | None:
        s = a.state()
        others = [n for n in s["nodeIdentities"] if n != a_id]
        return others if others and s["topology"]["connections"].get(others[0], {}).get(a_id) else None

    b_id = wait_for(two_nodes, 30, "b joined with edge b->a")[0]
    time.sleep(1.5)  # three fast probe rounds (edge_probe_s = 0.5) must not create a->b
    assert b_id not in a.state()["topology"]["connections"].get(a_id, {})
    assert "No cycles found with sufficient memory" in str(
        a.get("/instance/placement?model_id=mlx-community/Llama-3.2-1B-Instruct-4bit&min_nodes=2")[1])
    _ = b


def test_no_worker_node_never_in_topology(emu_factory) -> None:  # noqa: F811
    sub = fresh_subnet()
    addrs = [f"127.{sub}.11", f"127.{sub}.12"]
    a = emu_factory("a", addrs[0], addrs).start()
    b = emu_factory("b", addrs[1], addrs).start("--no-worker")
    a_id = a.node_id()
    wait_for(lambda: "elected" in b.log() and "Unpausing API" in b.log(), 20, "b up")
    wait_for(lambda: list(b.state()["nodeIdentities"]) == [a_id], 20, "b mirrors a's state")
    assert b.node_id() not in a.state()["nodeIdentities"]


@pytest.mark.sandbox_run
def test_node_loss_and_master_change(emu_factory, tiny_model) -> None:  # noqa: F811
    sub = fresh_subnet()
    addrs = [f"127.{sub}.{11 + i}" for i in range(3)]
    nodes = [emu_factory(f"n{i}", addrs[i], addrs) for i in range(3)]
    for n in nodes:
        n.start()
    ids = wait_cluster(nodes)
    logs = {i: n for i, n in zip(ids, nodes, strict=False)}
    master_id = next(i for i, n in logs.items() if "promoting self" in n.log())
    master = logs[master_id]
    followers = [n for i, n in logs.items() if i != master_id]
    # a follower dies: removed after node_timeout_s (4 s in FAST_TIMING), logged by the master
    victim = followers[0]
    victim_id = victim.node_id()
    code, inst = master.get("/instance/placement?model_id=mlx-community/Llama-3.2-1B-Instruct-4bit&min_nodes=3")
    assert code == 200 and master.post("/instance", {"instance": inst})[0] == 200
    iid = instance_body(inst)["instanceId"]
    wait_for(lambda: iid in master.state()["instances"], 10, "3-node instance created")
    victim.kill()
    wait_for(lambda: victim_id not in master.state()["nodeIdentities"], 20, "victim removed")
    assert f"Manually removing node {victim_id} due to inactivity" in master.log()
    wait_for(lambda: iid not in master.state()["instances"], 15, "instance on the lost node deleted")
    # the master dies: the survivor elects itself
    survivor = followers[1]
    s_id = survivor.node_id()
    master.kill()
    wait_for(lambda: "Node elected Master - promoting self" in survivor.log(), 20, "re-election")
    wait_for(lambda: list(survivor.state()["nodeIdentities"]) == [s_id], 20, "survivor alone in its state")


def test_force_master_takes_over(emu_factory) -> None:  # noqa: F811
    sub = fresh_subnet()
    addrs = [f"127.{sub}.11", f"127.{sub}.12"]
    a = emu_factory("a", addrs[0], addrs).start()
    wait_for(lambda: "Node elected Master - promoting self" in a.log(), 20, "a master")
    b = emu_factory("b", addrs[1], addrs).start("-m")
    b_id = b.node_id()
    wait_for(lambda: f"Node {b_id} elected master - demoting self" in a.log(), 20, "a demoted")
    assert "Node elected Master - promoting self" in b.log()
    wait_cluster([a, b])


def test_pair_instance_record_await_and_delete(new_pair) -> None:  # noqa: F811
    import json
    import urllib.request

    a, b = new_pair
    code, inst = a.get(f"/instance/placement?model_id={MODEL_ID}&min_nodes=1")
    iid = instance_body(inst)["instanceId"]
    code, created = b.post("/instance", {"instance": inst})
    assert code == 200 and set(created) == {"message", "command_id", "model_card"}
    assert created["model_card"]["modelId"] == MODEL_ID  # camelCase card inside a snake_case wrapper
    wait_for(lambda: iid in a.state()["instances"] and iid in b.state()["instances"], 10, "instance on both")
    assert b.get(f"/instance/{iid}")[1] == inst
    events = b.get("/events")[1]
    assert all(len(e) == 1 for e in events) and any("InstanceCreated" in e for e in events)
    with urllib.request.urlopen(f"{a.url}/instance/await?model_id={MODEL_ID}&timeout_seconds=5", timeout=10) as r:
        text = r.read().decode()
    assert text.startswith(": keep-alive")
    ready = json.loads(next(ln for ln in text.splitlines() if ln.startswith("data: "))[6:])
    # the union tag is kept around the snake_case body, as EXO's AwaitInstanceReadyMessage dumps it
    assert ready["type"] == "ready" and list(ready["instance"]) == ["MlxRingInstance"]
    body = ready["instance"]["MlxRingInstance"]
    assert body["instance_id"] == iid and "node_to_runner" in body["shard_assignments"]
    code, d = http_delete(a, f"/instance/{iid}")
    assert code == 200 and d["instance_id"] == iid and d["message"] == "Command received."
    wait_for(lambda: a.get(f"/instance/{iid}")[0] == 404 and b.get(f"/instance/{iid}")[0] == 404, 20, "gone")


@pytest.mark.sandbox_run
def test_frozen_master_is_replaced(emu_factory) -> None:  # noqa: F811
    import signal

    sub = fresh_subnet()
    addrs = [f"127.{sub}.11", f"127.{sub}.12"]
    nodes = [emu_factory(f"f{i}", addrs[i], addrs) for i in range(2)]
    for n in nodes:
        n.start()
    wait_cluster(nodes)
    master = next(n for n in nodes if "promoting self" in n.log())
    other = next(n for n in nodes if n is not master)
    master.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: "Node elected Master - promoting self" in other.log(), 20, "survivor takes over")
    finally:
        master.proc.send_signal(signal.SIGCONT)

"""Verdicts from fabricated observations, and the polling loops with a fake clock."""

import itertools

import pytest

from modeldrop.exo import observe
from modeldrop.exo import state as st
from modeldrop.exo.logs import hostfile_lines, ring_connect_errors
from modeldrop.exo.verdicts import (
    StartupSample,
    chat_verdict,
    cluster_verdict,
    ready_verdict,
    startup_verdict,
    transport_verdict,
)
from modeldrop.exo.wait import poll
from tests_selftest.support.exo_fakes import FakeClock
from tests_selftest.support.exo_samples import IID, NEW_STATE, R0, R1, RING_INSTANCE, A, B, new_state


def test_poll_reports_last_value_on_timeout():
    c = FakeClock()
    counter = itertools.count()
    r = poll(lambda: next(counter), lambda v: v > 100, 2.0, 0.5, clock=c, sleep=c.sleep)
    assert r.timed_out and r.value == 4 and r.samples == 5


def test_poll_stops_fast_and_keeps_errors():
    c = FakeClock()
    r = poll(lambda: 1 / 0, lambda v: True, 1.0, 0.5, clock=c, sleep=c.sleep)
    assert r.timed_out and "ZeroDivisionError" in r.last_error
    r = poll(lambda: 5, lambda v: False, 10.0, 0.5, stop=lambda v: v == 5, clock=c, sleep=c.sleep)
    assert r.stopped and r.samples == 1


def test_startup_verdicts():
    ok = {1: [StartupSample(0, True, 10.0, "n1"), StartupSample(1, True, 10.0, "n1")]}
    assert startup_verdict(ok, {1: 10.0}).ok
    exited = {1: [StartupSample(0, True, 10.0, None, "refused"), StartupSample(0.5, False, None, None, "refused")]}
    v = startup_verdict(exited, {1: 10.0})
    assert not v.ok and v.facts["exited"] == [1] and "exited 0.5s after start, before" in v.summary
    crashed = {1: [StartupSample(0, True, 10.0, "n1"), StartupSample(2.0, False, None, None, "refused")]}
    v = startup_verdict(crashed, {1: 10.0})
    assert v.facts["restarted"] == [1] and "after its API had answered" in v.summary
    restarted = {1: [StartupSample(0, True, 10.0, "n1"), StartupSample(1, True, 10.0, "n2")]}
    v = startup_verdict(restarted, {1: 10.0})
    assert not v.ok and v.facts["restarted"] == [1] and "n1 -> n2" in v.summary
    new_pid = {1: [StartupSample(0, True, 99.0, "n1")]}
    assert startup_verdict(new_pid, {1: 10.0}).facts["restarted"] == [1]
    no_api = {1: [StartupSample(0, True, 10.0, None, "ConnectionError")]}
    assert startup_verdict(no_api, {1: 10.0}).facts["no_api"] == [1]


def test_cluster_verdict_ok_isolated_one_way_and_ghost():
    view = st.cluster_view(NEW_STATE)
    assert cluster_verdict({1: A, 2: B}, {1: view, 2: view}, 2).ok
    alone = st.cluster_view(new_state(nodeIdentities={A: {}}, topology={"nodes": [A], "connections": {}}))
    v = cluster_verdict({1: A, 2: B}, {1: alone, 2: view}, 2)
    assert not v.ok and v.facts["isolated"] == [1] and "node1 sees 1/2 nodes (missing node2)" in v.summary
    one_way = st.cluster_view(new_state(topology={"nodes": [A, B], "connections": {A: {B: [{}]}}}))
    v = cluster_verdict({1: A, 2: B}, {1: one_way, 2: view}, 2)
    assert not v.ok and v.facts["missing_edges"] and v.facts["no_ring"] == ["node1–node2"], v.summary
    assert "node1–node2 [one-way: node2 cannot reach node1's API]) (in the topology node1 serves)" in v.summary
    ghost = st.cluster_view(new_state(topology={"nodes": [A, B, "ghost"],
                                                "connections": NEW_STATE["topology"]["connections"]}))
    v = cluster_verdict({1: A, 2: B}, {1: ghost, 2: view}, 2)
    assert not v.ok and v.facts["ghosts"]


def ring_view(ids: list[str], links: list[tuple[int, int]]) -> st.ClusterView:
    """A /state view of these node ids with socket edges both ways for each link (0-based indices)."""
    conns: dict = {}
    for a, b in links:
        for x, y in ((a, b), (b, a)):
            conns.setdefault(ids[x], {})[ids[y]] = [{"sinkMultiaddr": {"address": f"/ip4/10.0.0.{y}/tcp/52415",
                                                                        "ip_address": f"10.0.0.{y}", "port": 52415}}]
    return st.cluster_view(new_state(nodeIdentities={i: {} for i in ids},
                                     topology={"nodes": ids, "connections": conns}))


def test_cluster_verdict_four_macs_on_a_thunderbolt_ring():
    """A ring passes (the diagonals are noted, not failed); a ring with cable 4-1 out fails naming that link, and
    so does a one-way link; MlxJaccl on the ring needs the diagonals."""
    ids = ["id-a" * 4, "id-b" * 4, "id-c" * 4, "id-d" * 4]
    live = {k: ids[k - 1] for k in range(1, 5)}
    ring = ring_view(ids, [(0, 1), (1, 2), (2, 3), (3, 0)])
    v = cluster_verdict(live, {k: ring for k in live}, 4)
    assert v.ok and "ring node1 → node2 → node3 → node4 → node1" in v.summary, v.summary
    assert v.details["links_not_needed"] == [
        "no link node1–node3 (not needed: a ring runs node1 → node2 → node3 → node4 → node1)",
        "no link node2–node4 (not needed: a ring runs node1 → node2 → node3 → node4 → node1)"]
    path = ring_view(ids, [(0, 1), (1, 2), (2, 3)])
    v = cluster_verdict(live, {k: path for k in live}, 4)
    assert not v.ok and v.facts["no_ring"] == ["node1–node4"] and not v.facts["isolated"], v.summary
    assert v.summary == ("no ring through all 4 nodes in the topology: EXO cannot place an MlxRing instance over them "
                         "(missing link that would close it: node1–node4)")
    jaccl = cluster_verdict(live, {k: ring for k in live}, 4, "MlxJaccl")
    assert not jaccl.ok and "node1–node3" in jaccl.facts["no_ring"] and "no RDMA link" in jaccl.summary


def test_ready_verdict_reasons():
    ready = st.instance_progress(NEW_STATE, IID)
    assert ready_verdict(ready, True, None, False, 3.0).ok
    failed = st.instance_progress(new_state(runners={R0: {"RunnerFailed": {"errorMessage": "boom"}}}), IID)
    v = ready_verdict(failed, True, None, False, 3.0)
    assert not v.ok and "boom" in v.summary and v.facts["runner_failed"]
    gone = st.instance_progress(new_state(instances={}), IID)
    assert ready_verdict(gone, True, None, False, 3.0).facts == {"vanished": True}
    assert ready_verdict(gone, False, None, True, 30.0).facts == {"never_created": True}
    loading = st.instance_progress(new_state(runners={R0: {"RunnerLoading": {"layersLoaded": 1, "totalLayers": 8}},
                                                      R1: {"RunnerLoading": {"layersLoaded": 1,
                                                                             "totalLayers": 8}}}), IID)
    v = ready_verdict(loading, True, 20.0, False, 25.0)
    assert v.facts["stalled"] and "no runner progress for 20s" in v.summary


def test_runner_failure_names_the_node_and_the_signal():
    killed = new_state(runners={R1: {"RunnerFailed": {"errorMessage": "Terminated (signal=9 (Killed: 9))"}}})
    v = ready_verdict(st.instance_progress(killed, IID), True, None, False, 3.0)
    assert not v.ok and f"on studio-1 (node {A[:12]}), runner {R1[:8]}" in v.summary, v.summary
    assert v.facts["runner_signal"] == [9] and v.facts["runner_nodes"] == [f"studio-1 (node {A[:12]})"]
    crashed = new_state(runners={R1: {"RunnerFailed": {"errorMessage": "Terminated (exitcode=1)"}}})
    assert "runner_signal" not in ready_verdict(st.instance_progress(crashed, IID), True, None, False, 3.0).facts
    # nodeToRunner empty (state lag): the shard's rank still says which runner it was
    body = st.untag(killed["instances"][IID])[1]
    body["shardAssignments"]["nodeToRunner"] = {}
    v = ready_verdict(st.instance_progress(killed, IID), True, None, False, 3.0)
    assert "on rank 1 (nodeToRunner does not say which node)" in v.summary, v.summary


class StateClient:
    """A client whose /state walks through a script of states, one per call."""

    def __init__(self, states):
        self.states = list(states)

    def state(self):
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def test_wait_ready_passes_when_all_ready_after_loading():
    c = FakeClock()
    loading = new_state(runners={R0: {"RunnerLoading": {"layersLoaded": 1, "totalLayers": 8}}})
    v = observe.wait_ready(StateClient([new_state(runners={}), loading, NEW_STATE]), IID, 60, clock=c, sleep=c.sleep)
    assert v.ok


def test_wait_ready_stall_fails_before_the_timeout():
    c = FakeClock()
    stuck = new_state(runners={R0: {"RunnerWarmingUp": {}}, R1: {"RunnerWarmingUp": {}}})
    v = observe.wait_ready(StateClient([stuck]), IID, 600, stall_s=20, clock=c, sleep=c.sleep)
    assert not v.ok and v.facts["stalled"] and 20 <= c.t < 25


def test_wait_ready_fails_fast_on_runner_failed_and_vanish():
    c = FakeClock()
    failed = new_state(runners={R0: {"RunnerFailed": {"errorMessage": "[ring] Couldn't connect (error: 61)"}}})
    v = observe.wait_ready(StateClient([new_state(runners={}), failed]), IID, 600, clock=c, sleep=c.sleep)
    assert not v.ok and "error: 61" in v.summary and c.t < 2
    c = FakeClock()
    v = observe.wait_ready(StateClient([new_state(runners={}), new_state(instances={})]), IID, 600, clock=c,
                           sleep=c.sleep)
    assert v.facts == {"vanished": True} and c.t < 2


def _chat(ok: bool):
    from modeldrop.verdict import Verdict

    calls = []

    def serving():
        calls.append(1)
        return Verdict(ok, "2 chat completion(s) answered" if ok else "node1 non-stream: http: 404", {}, {})
    return serving, calls


def test_no_runners_but_chat_answers_is_serving_truth():
    """nodeToRunner {} / runners absent while chat works: placement passes, the lag is a warning fact."""
    c = FakeClock()
    serving, calls = _chat(True)
    lagging = new_state(runners={})
    v = observe.wait_ready(StateClient([lagging]), IID, 600, stall_s=180, clock=c, sleep=c.sleep, serving=serving)
    assert v.ok and v.facts["runner_lag"] and "serving truth" in v.summary
    assert observe.SERVING_AFTER_S <= c.t < observe.SERVING_AFTER_S + 1 and len(calls) == 1
    from modeldrop import signatures
    assert [m.sig.id for m in signatures.match("placement", facts=v.facts)] == ["SEED-MAP-LAG"]


def test_no_runners_and_no_chat_is_the_guides_fast_stop():
    c = FakeClock()
    serving, calls = _chat(False)
    v = observe.wait_ready(StateClient([new_state(runners={})]), IID, 600, stall_s=60, clock=c, sleep=c.sleep,
                           serving=serving)
    assert not v.ok and v.facts["no_runners_no_chat"] and "fast stop" in v.summary
    assert "nodeToRunner=0 and no successful chat" in v.summary and 60 <= c.t < 61
    assert len(calls) >= 4  # retried every SERVING_EVERY_S, and once more at the stop
    from modeldrop import signatures
    assert "SEED-NO-RUNNERS" in [m.sig.id for m in signatures.match("placement", facts=v.facts)]


def test_runners_loading_are_not_probed_with_chat():
    c = FakeClock()
    serving, calls = _chat(True)
    loading = new_state(runners={R0: {"RunnerLoading": {"layersLoaded": 1, "totalLayers": 8}}})
    v = observe.wait_ready(StateClient([loading] * 40 + [NEW_STATE]), IID, 600, clock=c, sleep=c.sleep,
                           serving=serving)
    assert v.ok and not calls and "runner_lag" not in v.facts


LOG = ('[ 2026-06-22 10:00:00.000 | INFO | utils_mlx:init:1 ] rank 0 hostfile: /tmp/h_0.json hosts: '
       '["0.0.0.0:51572", "192.168.1.10:51572"]\n'
       'RuntimeError: [ring] Couldn\'t connect (error: 61)\n')


def test_log_parsers():
    h = hostfile_lines(LOG)
    assert h[0].rank == 0 and h[0].hosts == ["0.0.0.0:51572", "192.168.1.10:51572"]
    assert ring_connect_errors(LOG) == [61]


def _socks(local, remote):
    return [{"local": local, "remote": remote, "state": "ESTABLISHED"}]


def test_transport_verdict_ring():
    inst = st.parse_instance(RING_INSTANCE)
    logs = {1: LOG.splitlines()[0], 2: LOG.splitlines()[0].replace('"0.0.0.0:51572", "192.168.1.10:51572"',
                                                                   '"192.168.1.11:51572", "0.0.0.0:51572"')}
    hf = {k: hostfile_lines(t) for k, t in logs.items()}
    socks = {1: _socks("192.168.1.11:51572", "192.168.1.10:60000") + _socks("192.168.1.11:60001", "192.168.1.10:51572"),
             2: _socks("192.168.1.10:51572", "192.168.1.11:60001")}
    v = transport_verdict(inst, {1: B, 2: A}, hf, socks, {1: [], 2: []})
    assert v.ok, v.summary
    v = transport_verdict(inst, {1: B, 2: A}, hf, {1: socks[1], 2: []}, {1: [61], 2: []})
    assert not v.ok and "error: 61" in v.summary and "node2: no ESTABLISHED socket on ring port 51572" in v.summary
    v = transport_verdict(inst, {1: A, 2: B}, hf, socks, {1: [], 2: []})
    assert not v.ok and v.facts["mismatch"]


def test_transport_one_node_passes_with_note():
    one = st.parse_instance({"MlxRingInstance": {"instanceId": "i", "shardAssignments": {
        "modelId": "m", "runnerToShard": {R0: {}}, "nodeToRunner": {A: R0}},
        "hostsByNode": {A: [{"ip": "0.0.0.0", "port": 1}]},
        "ephemeralPort": 1}})
    v = transport_verdict(one, {1: A}, {}, {}, {1: []})
    assert v.ok and "no ring" in v.summary


def test_transport_empty_runner_map_on_a_multi_shard_instance_is_missing_evidence():
    """nodeToRunner {} with 2 shards is not a 1-node instance: the gate cannot check the ring, so it fails."""
    import copy
    raw = copy.deepcopy(RING_INSTANCE)
    raw["MlxRingInstance"]["shardAssignments"]["nodeToRunner"] = {}
    inst = st.parse_instance(raw)
    assert inst.shard_count == 2 and inst.node_ids == []
    v = transport_verdict(inst, {1: B, 2: A}, {}, {}, {1: [], 2: []})
    assert not v.ok and v.facts["no_runner_map"] and "no ring to check" not in v.summary
    assert "2 shards but its nodeToRunner lists 0 node(s)" in v.summary


def test_chat_verdict():
    good = {"node": 1, "stream": True, "status": 200, "error": None, "text_chars": 0, "reasoning_chars": 12,
            "latency_s": 0.5}
    assert chat_verdict([good]).ok  # reasoning_content counts as output
    cut = dict(good, stream=False, error="body cut", error_kind="truncated")
    v = chat_verdict([good, cut])
    assert not v.ok and "node1 non-stream: truncated" in v.summary and v.facts["kinds"] == ["truncated"]
    empty = dict(good, reasoning_chars=0)
    assert "no content and no reasoning_content" in chat_verdict([empty]).summary


# -- issue 22: transport while /state lags, JACCL connect errors, latency stability, node names ----------------
def _lagged_instance():
    import copy
    raw = copy.deepcopy(RING_INSTANCE)
    raw["MlxRingInstance"]["shardAssignments"]["nodeToRunner"] = {}
    return st.parse_instance(raw)


def _hostfile(rank: int, hosts: list[str]) -> str:
    import json
    return f"rank {rank} hostfile: /tmp/exo_501/hosts_{IID}_{rank}.json hosts: {json.dumps(hosts)}"


class SocketNode:
    def __init__(self, socks):
        self.socks, self.asked = socks, []

    def run_probe(self, name, args, *, timeout):
        self.asked.append((name, args))
        return {"sockets": self.socks}


def test_lagging_state_takes_the_ring_from_the_runners_hostfile_lines_and_sockets():
    """nodeToRunner {}: each node's own `rank r hostfile` line of the instance says its neighbours and the ring port;
    ESTABLISHED sockets to them pass (with a warning saying how it was checked); a missing socket fails naming the
    node and rank. No chat is tried when the logs could be checked."""
    inst = _lagged_instance()
    logs = {1: _hostfile(0, ["0.0.0.0:51572", "192.168.1.10:51572"]),
            2: _hostfile(1, ["192.168.1.11:51572", "0.0.0.0:51572"])
            + "\nrank 0 hostfile: /tmp/hosts_old_0.json hosts: []"}
    nodes = {1: SocketNode(_socks("192.168.1.11:51572", "192.168.1.10:60000")),
             2: SocketNode(_socks("192.168.1.10:51572", "192.168.1.11:60001"))}
    tried = []
    v = observe.check_transport(inst, {1: B, 2: A}, logs, nodes, serving=lambda: tried.append(1))
    assert v.ok and "from the runners' own hostfile lines" in v.summary and not tried, v.summary
    assert v.warnings and "runner map lag" in v.warnings[0]
    assert nodes[1].asked == [("sockets", {"port": 51572})]
    nodes[2].socks = []
    v = observe.check_transport(inst, {1: B, 2: A}, logs, nodes)
    assert not v.ok and "node2 (rank 1): no ESTABLISHED socket on ring port 51572 to 192.168.1.11" in v.summary


def test_lagging_state_with_nothing_to_check_passes_on_chat_through_every_node_with_a_warning():
    from modeldrop.verdict import Verdict
    inst = _lagged_instance()
    served = Verdict.passed("2 chat completion(s) answered", {"results": []})
    v = observe.check_transport(inst, {1: B, 2: A}, {1: "", 2: ""}, {}, serving=lambda: served)
    assert v.ok and "nothing to check after placement passed on serving truth" in v.summary
    assert v.warnings == ["transport not checked: /state lists no runner of the instance and no runner logged its "
                          "hostfile line; chat through every node answered, which is the evidence (2 chat "
                          "completion(s) answered)"]
    dead = Verdict.failed("node2 non-stream: timeout: no answer")
    v = observe.check_transport(inst, {1: B, 2: A}, {1: "", 2: ""}, {}, serving=lambda: dead)
    assert not v.ok and v.facts["no_runner_map"] and "and no chat through every node answered" in v.summary
    from modeldrop import signatures
    assert "X-NO-RUNNER-MAP" in [m.id for m in signatures.match("transport", facts=v.facts)]


@pytest.mark.fault("jaccl-connect-error", gate="transport", signature="G5")
def test_jaccl_connect_errors_fail_the_transport_verdict(fault_row):
    shards = RING_INSTANCE["MlxRingInstance"]["shardAssignments"]
    raw = {"MlxJacclInstance": {"instanceId": IID, "shardAssignments": shards, "jacclDevices": [],
                                "jacclCoordinators": {A: "10.0.0.1:5", B: ""}}}
    inst = st.parse_instance(raw)
    coords = {1: ["rank 0 MLX_JACCL_COORDINATOR: 10.0.0.1:5"], 2: ["rank 1 MLX_JACCL_COORDINATOR: 10.0.0.1:5"]}
    assert transport_verdict(inst, {1: B, 2: A}, {}, {}, {1: [], 2: []}, coords, {1: [], 2: []}).ok
    log = "RuntimeError: [jaccl] Couldn't connect (error: 60)"
    from modeldrop.exo.logs import jaccl_connect_errors
    v = transport_verdict(inst, {1: B, 2: A}, {}, {}, {1: [], 2: []}, coords, {1: [], 2: jaccl_connect_errors(log)})
    assert not v.ok and v.facts["jaccl_errno"] == [60]
    assert "node2: [jaccl] Couldn't connect (error: 60): the JACCL coordinator is unreachable" in v.summary
    from modeldrop import signatures
    assert "G5" in [m.id for m in signatures.match("transport", logs={"node2": log}, facts=v.facts)]
    fault_row.caught_by, fault_row.signature_seen, fault_row.signature_matched = "transport", True, "G5"


@pytest.mark.fault("latency-unstable", gate="chat", signature="latency not stable")
def test_latency_stability_is_a_warning_unless_asked_to_stop(fault_row):
    from modeldrop.exo.verdicts import latency_verdict
    steady = latency_verdict({1: [0.30, 0.32, 0.31], 2: [0.4, 0.41, 0.5]}, 3.0, stop=False)
    assert steady.ok and not steady.warnings and steady.summary == "latency stable: node1 1.1x, node2 1.2x"
    jumpy = {1: [0.30, 0.32, 0.31], 2: [0.4, 2.0, 0.5]}
    warned = latency_verdict(jumpy, 3.0, stop=False)
    assert warned.ok and warned.warnings == [
        "latency not stable: node2: the slowest of 3 short requests took 5.0x the fastest (0.40, 2.00, 0.50 s; "
        "bound 3x, --chat-spread-max)"]
    stopped = latency_verdict(jumpy, 3.0, stop=True)
    assert not stopped.ok and stopped.problems == warned.warnings
    assert latency_verdict(jumpy, 6.0, stop=True).ok
    noise = latency_verdict({1: [0.001, 0.054, 0.002]}, 3.0, stop=True)  # 54x, but milliseconds: not judged
    assert noise.ok and not noise.warnings and noise.details["spread"] == {}
    fault_row.caught_by, fault_row.signature_seen, fault_row.signature_matched = "chat", True, "latency not stable"


def test_latency_check_sends_short_requests_through_each_node(monkeypatch):
    seen = []
    times = iter([0.2, 0.2, 0.9, 0.3, 0.3, 0.3])

    def fake_chat(url, model, stream, max_tokens=64, stall_s=30, timeout_s=120):
        seen.append((url, stream, max_tokens))
        return {"url": url, "error": None, "latency_s": next(times)}
    monkeypatch.setattr(observe, "one_chat", fake_chat)
    v = observe.latency_check({1: "http://a", 2: "http://b"}, "m", 3.0, stop=False)
    assert seen == [("http://a", False, 8)] * 3 + [("http://b", False, 8)] * 3
    assert v.ok and v.warnings and v.warnings[0].startswith("latency not stable: node1: the slowest of 3")


def test_runner_failure_names_the_configured_node_first():
    killed = new_state(runners={R0: {"RunnerFailed": {"errorMessage": "Terminated (signal=9 (Killed: 9))"}},
                                R1: {"RunnerReady": {}}})
    names = {B: "node2 (me@studio2)", A: "node1 (me@studio1)"}
    v = ready_verdict(st.instance_progress(killed, IID, names), True, None, False, 3.0)
    assert "on node2 (me@studio2), studio-2 (node " in v.summary, v.summary
    assert v.facts["runner_nodes"] == [f"node2 (me@studio2), studio-2 (node {B[:12]})"]


def test_placement_keeps_the_create_command_id():
    class Api:
        def placement(self, *a):
            return {"MlxRingInstance": {"instanceId": IID}}

        def create_instance(self, inst):
            return {"message": "Command received.", "command_id": "c0ffee"}
    created: dict = {}
    inst, failed = observe.place(Api(), "m", "Pipeline", "MlxRing", 2, created)
    assert failed is None and created["command_id"] == "c0ffee"


@pytest.mark.parametrize("status,least_s", [("RunnerConnecting", observe.CONNECT_BUDGET_S), ("RunnerConnected", 20)])
def test_only_a_connecting_ring_waits_out_mlx_connect_retries(status, least_s):
    """Runners Connecting may still end in MLX's errno line (G2), so they get the connect budget; runners Connected
    (EXO reports it once the group connected) waiting for a download get the plain stall budget."""
    c = FakeClock()
    stuck = new_state(runners={R0: {status: {}}, R1: {status: {}}})
    v = observe.wait_ready(StateClient([stuck]), IID, 600, stall_s=20, clock=c, sleep=c.sleep)
    assert not v.ok and v.facts["stalled"] and least_s <= c.t < least_s + 5, c.t

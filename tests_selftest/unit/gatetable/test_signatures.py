"""The failure-signature table: shape, and a fabricated case for each signature a gate can see."""

import pytest

from modeldrop import signatures as sg
from tests_selftest.support.exo_samples import IID, MODEL, R0, A, B, new_state

EXERCISED: set[str] = set()


def ids(gate, **kw):
    got = [m.id for m in sg.match(gate, **kw)]
    EXERCISED.update(got)
    return got


def test_table_shape():
    assert len({s.id for s in sg.TABLE}) == len(sg.TABLE)
    for s in sg.TABLE:
        assert s.title and s.cause and s.next_command and s.matches and s.gates
    for must in ("A1", "A6", "A7", "A9", "A10", "D1", "D6", "E1", "E2", "F1", "F4", "F5", "F8", "F11", "G2", "G3",
                 "H1", "H2", "H3", "I1", "I2", "I3", "SEED-HF-MISSING", "SEED-MAP-LAG", "SEED-LATE-CRASH",
                 *[f"C{i}x" for i in range(1, 13)]):
        assert must in sg.BY_ID


CASES = [
    ("A1", "cluster", dict(logs={"node1": "EXO_ZENOH_NAMESPACE: a", "node2": "EXO_ZENOH_NAMESPACE: b"},
                           facts={"isolated": [1, 2], "n": 2})),
    ("A5", "cluster", dict(logs={"node1": "Nack attempt 3: Requesting Event Log from 12"})),
    ("A6", "cluster", dict(facts={"ghosts": True})),
    ("A7", "chat", dict(logs={"node2": "Manually removing node abc due to inactivity"})),
    ("A9", "startup",
     dict(logs={"node1": "ValueError: EXO_LIBP2P_NAMESPACE has been removed - use EXO_ZENOH_NAMESPACE instead"})),
    ("A9", "node1_canary", dict(logs={"node1": "ValueError: Bootstrap peers has been temporarily removed"})),
    ("A10", "cluster", dict(facts={"missing_edges": True})),
    ("X-NO-RING", "cluster", dict(facts={"no_ring": ["node1–node4"], "n": 4, "missing_edges": True})),
    ("A10", "transport", dict(logs={"node1": "[ring] Couldn't connect (error: 60)"})),
    ("C1x", "placement",
     dict(http={"status": 400, "body": '{"error":{"message":"No cycles found with sufficient memory"}}'})),
    ("C2x", "placement", dict(http={"status": 400, "body": "Node 1 (abc) has insufficient memory: requires 9 GB"})),
    ("C3x", "placement", dict(http={"status": 400, "body": "Requested Tensor sharding but this model does not "
                                                           "support tensor parallelism: m"})),
    ("C4x", "placement",
     dict(http={"status": 400, "body": "No tensor sharding found for model with hidden_size=3072"})),
    ("C5x", "placement",
     dict(http={"status": 400, "body": "Requested RDMA (MlxJaccl) but no RDMA-connected cycles available"})),
    ("C6x", "placement",
     dict(http={"status": 400, "body": "MLX ring backend requires connectivity between neighbouring nodes"})),
    ("C7x", "placement",
     dict(http={"status": 400, "body": "Pipeline parallelism is not supported for Gemma 4; use tensor"})),
    ("C8x", "placement", dict(http={"status": 400, "body": "Cannot distribute 4 layers across 8 nodes"})),
    ("C9x", "placement", dict(http={"status": 400, "body": "Insufficient memory to create instance. Required: 9GB"})),
    ("C10x", "placement", dict(facts={"never_created": True})),
    ("SEED-NO-RUNNERS", "placement", dict(facts={"no_runners_no_chat": True})),
    ("SEED-OFFLINE-JOIN", "cluster", dict(facts={"isolated": [2], "n": 2, "offline_join": True})),
    ("SEED-MAP-LAG", "placement", dict(facts={"runner_lag": ["nodeToRunner=0 after 12s while chat answers"]})),
    ("C11x", "placement", dict(http={"status": 400, "body": "Failed to load model card: x"})),
    ("C12x", "placement", dict(http={"status": 500, "body": "Expected exactly one new instance from placement"})),
    ("D1", "placement", dict(state=new_state(), facts={"model_id": MODEL})),
    ("D1", "placement", dict(facts={"stalled": True, "runners": {R0: "RunnerIdle"}})),
    ("D6", "node1_canary", dict(facts={"dir_drift": True})),
    ("D6", "node1_canary", dict(facts={"not_listed": True, "has_card": True})),
    ("X-NO-CARD", "node1_canary", dict(facts={"no_card": True, "add_command": "curl -X POST x/models/add"})),
    ("X-NO-CARD", "cluster", dict(facts={"no_card": True})),
    ("X-RUNNER-SIGNAL", "placement", dict(facts={"runner_signal": [9], "runner_nodes": ["sbx-node2 (node abc)"]})),
    ("X-RUNNER-SIGNAL", "chat", dict(logs={"node2": "Runner terminated with signal=15 (Terminated)"})),
    ("X-NO-RUNNER-MAP", "transport", dict(facts={"no_runner_map": True})),
    ("X-UNKNOWN-ARCH", "preflight", dict(facts={"unknown_architecture": {"node2": "qwen3_5_moe"}})),
    ("X-UNLOADABLE-FORMAT", "preflight", dict(facts={"unloadable_format": "gguf"})),
    ("X-DOES-NOT-FIT", "preflight", dict(facts={"does_not_fit": {"size_bytes": 713, "available_bytes": 46}})),
    ("X-CARD-IMPOSSIBLE", "preflight", dict(facts={"card_impossible": "config.json has no hidden_size"})),
    ("E1", "node1_canary",
     dict(logs={"node1": "Offline mode: model m is not fully available locally, cannot download"})),
    ("E1", "placement", dict(state=new_state(downloads={A: [{"DownloadFailed": {"nodeId": A, "shardMetadata": {},
                                                "errorMessage": "Model files not found locally "
                                                                "in offline mode: m"}}]}))),
    ("E2", "node1_canary", dict(logs={"node1": "File x not found locally and cannot download in offline mode"})),
    ("F1", "placement", dict(facts={"stalled": True, "runners": {R0: "RunnerConnecting"}})),
    ("F2", "placement", dict(facts={"stalled": True, "runners": {R0: "RunnerLoading(3/8)"}})),
    ("F4", "placement", dict(logs={"node1": f"Instance {IID} exceeded 5 retries, requesting deletion"})),
    ("F5", "chat", dict(logs={"node2": "Runner terminated with signal=9 (Killed: 9)"})),
    ("F8", "placement", dict(logs={"node1": "Runner r1 crashed with critical exception ValueError: x"})),
    ("F11", "placement", dict(facts={"vanished": True})),
    ("G1", "chat", dict(logs={"node1": "[METAL] Command buffer execution failed: Caused GPU Timeout Error"})),
    ("G2", "transport", dict(logs={"node2": "RuntimeError: [ring] Couldn't connect (error: 65)"})),
    ("G3", "transport", dict(logs={"node1": "[ring] Receiving from socket 7 failed with errno 54"})),
    ("G5", "transport", dict(logs={"node2": "RuntimeError: [jaccl] Couldn't connect (error: 60)"})),
    ("G5", "placement", dict(facts={"jaccl_errno": [65]})),
    ("B10", "transport", dict(facts={"mismatch": True})),
    ("X-RING-SOCKET", "transport", dict(facts={"no_socket": True})),
    ("H1", "chat", dict(http={"status": 404, "error": "No instance found for model m"})),
    ("H2", "chat", dict(facts={"kinds": ["truncated"]})),
    ("H3", "chat", dict(facts={"kinds": ["stalled"]})),
    ("I1", "startup", dict(facts={"port_held": True})),
    ("I1", "node1_canary", dict(logs={"node1": "OSError: [Errno 98] Address already in use"})),
    ("I2", "startup", dict(logs={"node1": "PidfileError(...)"})),
    ("I3", "cluster", dict(state=new_state(nodeIdentities={A: {"friendlyName": "s"}, B: {"friendlyName": "s"}}))),
    ("X-EXIT", "startup", dict(facts={"exited": [2]})),
    ("X-EXO-GONE", "chat", dict(facts={"exo_gone": {1: "pid 4242"}, "kinds": ["transport"]})),
    ("X-EXO-GONE", "placement", dict(facts={"exo_gone": {2: "pid 7"}, "vanished": True})),
    ("X-RESTART", "startup", dict(facts={"restarted": [1]})),
    ("X-RESTART", "startup", dict(facts={"restarted": [2], "exited": [2]})),
    ("SEED-HF-MISSING", "preflight", dict(logs={"node2": "sh: 1: /opt/homebrew/bin/hf: command not found"})),
    ("SEED-MAP-LAG", "chat", dict(facts={"runner_lag": ["node2: instance absent"]})),
    ("SEED-LATE-CRASH", "bench", dict(logs={"node1": "Runner terminated with exitcode=1"})),
]


@pytest.mark.parametrize("sig,gate,kw", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_signature_matches(sig, gate, kw):
    assert sig in ids(gate, **kw)


def test_quiet_inputs_match_nothing():
    for gate in sg.ALL_EXO_GATES:
        assert ids(gate, logs={"node1": "[ INFO ] Running on http://0.0.0.0:52415"}, state=None, http=None) == []


def test_card_signatures_keep_apart():
    """D6 (dir drift) only when EXO has a card; a missing card is its own diagnosis, never D6."""
    assert "D6" not in ids("node1_canary", facts={"not_listed": True})
    no_card = sg.match("node1_canary", facts={"no_card": True, "add_command": "curl -X POST h/models/add"})
    assert [m.id for m in no_card] == ["X-NO-CARD"] and "curl -X POST h/models/add" in no_card[0].matched
    assert "/models/add" in sg.BY_ID["C11x"].next_command and "--online" not in sg.BY_ID["C11x"].next_command


def test_signal_killed_runner_is_named_before_the_generic_crash():
    got = ids("placement", facts={"runner_failed": True, "runner_signal": [9], "runner_nodes": ["sbx-node2"]})
    assert got[0] == "X-RUNNER-SIGNAL" and "F8" in got
    assert "X-RUNNER-SIGNAL" not in ids("placement", facts={"runner_failed": True})
    assert "X-RUNNER-SIGNAL" not in ids("chat", logs={"node1": "Runner terminated with exitcode=1"})


def test_a_placed_node_with_no_download_record_is_d1():
    """Real EXO offline with a shard gone from one node: that node records no download at all while the other's
    is Completed and runners wait; D1 names the silent node. Every placed node Completed: no D1."""
    silent = new_state()
    done = silent["downloads"][A]  # this sample's one Completed record
    silent["downloads"] = {A: done}
    (d1,) = [m for m in sg.match("placement", state=silent, facts={"model_id": MODEL}) if m.id == "D1"]
    name = silent["nodeIdentities"][B]["friendlyName"]
    assert f"{name} (node {B[:12]}): no download record" in d1.matched and A[:12] not in d1.matched
    complete = new_state()
    complete["downloads"] = {A: done, B: [{"DownloadCompleted": {**next(iter(done[0].values())), "nodeId": B}}]}
    assert "D1" not in ids("placement", state=complete, facts={"model_id": MODEL})


def test_gate_scoping():
    assert "H1" not in ids("placement", http={"status": 404, "error": "x"})


def test_every_signature_is_exercised():
    covered = {c[0] for c in CASES}
    assert covered == set(sg.BY_ID), sorted(set(sg.BY_ID) - covered)


def test_misspelt_fact_names_are_rejected():
    from modeldrop.verdict import Fact, Verdict
    with pytest.raises(ValueError, match="unknown verdict fact 'isolatd'"):
        sg.match("cluster", facts={"isolatd": [2], "n": 2})
    with pytest.raises(ValueError, match="unknown verdict fact 'vanshed'"):
        Verdict(False, "instance gone", {}, {"vanshed": True})
    with pytest.raises(ValueError):
        sg.fact("never_creatd")
    assert Verdict(False, "gone", {}, {"vanished": True}).facts == {Fact.vanished: True}
    assert ids("placement", facts={Fact.vanished: True}) == ["F11"]


def test_offline_join_hint_only_when_the_join_ran_offline():
    assert "SEED-OFFLINE-JOIN" not in ids("cluster", facts={"isolated": [2], "n": 2, "offline_join": False})
    assert "SEED-OFFLINE-JOIN" not in ids("cluster", facts={"offline_join": True})


def test_a_dead_exo_process_leads_and_names_the_node():
    """A node's exo that died mid-chat is the first signature, naming the node and pid; the next command says where
    to look and how to start the cluster again; nothing matches it without the fact, or at startup (X-EXIT's)."""
    got = sg.match("chat", facts={"exo_gone": {"1": "pid 4242"}, "kinds": ["truncated"]})
    assert [m.id for m in got] == ["X-EXO-GONE", "H2"], [m.id for m in got]
    assert got[0].matched == "exo of node1 (pid 4242) is no longer running"
    nxt = sg.BY_ID["X-EXO-GONE"].next_command
    assert "node<k>-cluster.log" in nxt and "pytest gates/ -k 'startup or cluster" in nxt
    assert "X-EXO-GONE" not in ids("chat", facts={"kinds": ["truncated"]})
    assert "X-EXO-GONE" not in ids("chat", facts={"exo_gone": {}})
    assert "X-EXO-GONE" not in ids("startup", facts={"exo_gone": {"2": "pid 9"}})


def test_h3_next_command_names_the_stalled_request():
    """H3's next command carries the stalled request's command id and API when the failure knows them; the table
    keeps the placeholders."""
    (h3,) = [m for m in sg.match("chat", facts={"kinds": ["stalled"], "command_id": "cmd-7f3a",
                                                "api_url": "http://10.0.0.2:52415"}) if m.id == "H3"]
    assert "curl -s -X POST http://10.0.0.2:52415/v1/cancel/cmd-7f3a" in h3.as_dict()["next_command"]
    (bare,) = [m for m in sg.match("chat", facts={"kinds": ["stalled"]}) if m.id == "H3"]
    assert "<api>/v1/cancel/<command_id>" in bare.as_dict()["next_command"]
    assert "<command_id>" in sg.BY_ID["H3"].row()["next_command"]

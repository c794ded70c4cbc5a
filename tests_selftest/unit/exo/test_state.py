"""Parsing /state for both generations, from the contract's JSON examples."""

from modeldrop.exo import state as st
from tests_selftest.support.exo_samples import (
    AWAIT_INSTANCE,
    IID,
    JACCL_INSTANCE,
    MODEL,
    NEW_STATE,
    OLD_STATE,
    R0,
    R1,
    A,
    B,
    new_state,
)


def test_untag_tagged_and_bare():
    assert st.untag({"RunnerReady": {}}) == ("RunnerReady", {})
    assert st.untag({"instanceId": "x"}) == (None, {"instanceId": "x"})
    assert st.untag(None) == (None, {})


def test_new_topology_is_directed_adjacency():
    view = st.cluster_view(NEW_STATE)
    assert view.members == {A, B} and view.identities == {A, B} and view.memory == {A, B}
    assert view.topology.shape == "adjacency" and view.topology.both_ways(A, B)
    assert view.friendly[A] == "studio-1"


def test_one_way_edge_is_missing_the_other_way():
    s = new_state(topology={"nodes": [A, B], "connections": {A: {B: [{}]}, B: {A: []}}})
    assert st.cluster_view(s).topology.missing_edges([A, B]) == [(B, A)]


def test_old_state_node_profiles_and_list_topology():
    view = st.cluster_view(OLD_STATE)
    assert view.identities == {A, B} and view.topology.shape == "list"
    assert view.topology.edges == {(A, B)} and not view.topology.both_ways(A, B)


def test_ring_instance_unwrapped_with_hosts_by_rank():
    inst = st.instances(NEW_STATE)[IID]
    assert inst.kind == "MlxRingInstance" and inst.model_id == MODEL and inst.is_ring
    assert inst.node_to_runner == {B: R0, A: R1} and set(inst.runner_ids) == {R0, R1}
    assert inst.hosts_by_node[B] == ["0.0.0.0:51572", "192.168.1.10:51572"] and inst.ephemeral_port == 51572
    assert inst.rank_of_node(A) == 1 and inst.runner_to_shard[R1].start_layer == 8


def test_old_flat_hosts_and_snake_case_await_payload():
    old = st.instances(OLD_STATE)[IID]
    assert old.flat_hosts == ["192.168.1.10:51572", "192.168.1.11:51572"] and old.hosts_by_node == {}
    aw = st.parse_instance(AWAIT_INSTANCE)
    assert aw.instance_id == IID and aw.node_to_runner == {B: R0} and aw.ephemeral_port == 51572


def test_jaccl_instance():
    inst = st.parse_instance(JACCL_INSTANCE)
    assert inst.kind == "MlxJacclInstance" and not inst.is_ring and inst.jaccl_coordinators[B] == "10.0.0.3:64618"


def test_ready_accepts_ready_or_running_and_matches_on_key():
    p = st.instance_progress(NEW_STATE, IID)
    assert p.present and p.ready
    old = st.instance_progress(OLD_STATE, IID)
    assert not old.ready and old.labels()[R1] == "RunnerLoading(3/8)"


def test_failed_runner_and_stale_failed_entries_ignored():
    s = new_state(runners={R0: {"RunnerFailed": {"errorMessage": "Terminated (exitcode=1)", "diagnostics": []}},
                           "stale": {"RunnerFailed": {"errorMessage": "old"}}})
    p = st.instance_progress(s, IID)
    assert p.failures == {R0: "Terminated (exitcode=1)"} and p.labels()[R1] == "absent"


def test_runners_absent_right_after_creation_are_not_ready():
    p = st.instance_progress(new_state(runners={}), IID)
    assert p.present and not p.ready and p.key() == ()


def test_instance_missing():
    assert not st.instance_progress(new_state(instances={}), IID).present


def test_downloads_per_node_with_model_ids():
    d = {x.node_id: x for x in st.downloads_for_model(NEW_STATE, MODEL)}
    assert d[A].kind == "DownloadCompleted" and d[A].read_only is True
    assert d[A].model_directory.endswith("mlx-community--Llama-3.2-1B-Instruct-4bit")
    assert d[B].kind == "DownloadOngoing"

"""Progress lines of the long waits (modeldrop.progress): at most one per node per 10 s and none for a wait shorter
than that; what placement, startup and the cluster join print while they wait; the probes' own progress lines
(manifest, hashes) reaching the caller and staying out of the probe's stderr."""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

from modeldrop import progress
from modeldrop.exo import observe
from modeldrop.nodes import LocalNode
from modeldrop.progress import Progress
from tests_selftest.support.exo_fakes import FakeClock
from tests_selftest.support.exo_samples import IID, MODEL, NEW_STATE, R0, R1, A, B, new_state


class StateClient:
    """/state walks through a script of states, one per call (the last one stays)."""

    def __init__(self, states: list[dict], clock: FakeClock | None = None, nid: str = "", up_at: float = 0.0):
        self.states, self.clock, self.nid, self.up_at = list(states), clock, nid, up_at

    def state(self) -> dict:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def node_id(self, timeout_s: float = 3.0) -> str:
        if self.clock is not None and self.clock() < self.up_at:
            raise ConnectionRefusedError("refused")
        return self.nid


class Launcher:
    record = SimpleNamespace(start=100.0)

    def proc(self) -> dict:
        return {"pid": 1, "start": 100.0}


def test_a_node_gets_at_most_one_line_per_period_and_a_short_wait_none():
    c, out = FakeClock(), []
    p = Progress(out.append, "placement", 600, clock=c)
    for _ in range(19):  # 9.5 s of samples every 0.5 s: shorter than the period, nothing printed
        c.sleep(0.5)
        assert p.seen("node1", "its runner to be Ready", "RunnerLoading 1/8 layers") is None
    for _ in range(40):  # then 20 s more, two nodes sampled every 0.5 s
        c.sleep(0.5)
        p.seen("node1", "its runner to be Ready", "RunnerLoading 2/8 layers")
        p.seen("node2", "its runner to be Ready", "RunnerWarmingUp")
    assert [ln.split(":")[0] for ln in out] == ["placement node1", "placement node2"] * 2  # at 10 s and 20 s
    assert out[0] == ("placement node1: waiting for its runner to be Ready; last seen RunnerLoading 2/8 layers; "
                      "10s of 600s")
    p.restart()
    c.sleep(9)
    assert p.seen("node1", "x", "y") is None, "restart: the wait's clock and every node's period start again"
    broken = Progress(lambda line: 1 / 0, "g", clock=c)
    c.sleep(11)
    assert broken.seen("node1", "x", "y"), "a sink that raises does not break the wait"


def test_amount_says_bytes_rate_and_eta():
    assert progress.amount(1024**3, 3 * 1024**3, 4.0) == "1.00 GiB of 3.00 GiB (33%), 256.0 MiB/s, ETA 0:08"
    assert progress.amount(512 * 1024**2, None, 2.0) == "512.0 MiB, 256.0 MiB/s"


def test_placement_prints_each_nodes_runner_state_and_exos_download():
    c, out = FakeClock(), []
    loading = new_state(runners={R0: {"RunnerLoading": {"layersLoaded": 3, "totalLayers": 8}},
                                 R1: {"RunnerWarmingUp": {}}})
    states = [new_state(instances={}, runners={})] * 30 + [loading] * 30 + [NEW_STATE]
    v = observe.wait_ready(StateClient(states), IID, 600, clock=c, sleep=c.sleep, model_id=MODEL,
                           progress=Progress(out.append, "placement", clock=c), names={A: "node1", B: "node2"})
    assert v.ok, v.summary
    assert out[0] == "placement instance: waiting for its runner to be Ready; last seen absent from /state; 10s of 600s"
    assert out[1:] == [  # from 15 s each node's runner, then again 10 s later
        "placement node2: waiting for its runner to be Ready; last seen RunnerLoading 3/8 layers, EXO download 0% of "
        "0.00 GiB; 15s of 600s",
        "placement node1: waiting for its runner to be Ready; last seen RunnerWarmingUp; 15s of 600s",
        "placement node2: waiting for its runner to be Ready; last seen RunnerLoading 3/8 layers, EXO download 0% of "
        "0.00 GiB; 25s of 600s",
        "placement node1: waiting for its runner to be Ready; last seen RunnerWarmingUp; 25s of 600s"]


def test_startup_prints_the_nodes_not_up_then_the_settle_window():
    c, out = FakeClock(), []
    clients = {1: StateClient([NEW_STATE], c, A, 1.0), 2: StateClient([NEW_STATE], c, B, 12.0)}
    v = observe.watch_startup({1: Launcher(), 2: Launcher()}, clients,
                              settle_s=15, clock=c, sleep=c.sleep, progress=Progress(out.append, "startup", clock=c))
    assert v.ok, v.summary
    assert out[0].startswith("startup node2: waiting for its API to answer /node_id; last seen no answer yet "
                             "(ConnectionRefusedError: refused); 10s of 120s"), out
    assert not any(ln.startswith("startup node1: waiting for its API") for ln in out), "node1 answered: no line"
    settle = [ln for ln in out if "settle window" in ln]
    assert settle and all("s into the window" in ln and ln.endswith("of 27s") for ln in settle), out


def test_cluster_join_prints_nodes_seen_and_links_per_node():
    c, out = FakeClock(), []
    alone = new_state(nodeIdentities={A: {}}, topology={"nodes": [A], "connections": {}})
    clients = {1: StateClient([alone] * 30 + [NEW_STATE]), 2: StateClient([alone] * 30 + [NEW_STATE])}
    v = observe.watch_cluster(clients, {1: A, 2: B}, 60, clock=c, sleep=c.sleep,
                              progress=Progress(out.append, "cluster", clock=c))
    assert v.ok, v.summary
    assert out == ["cluster node1: waiting for 2 nodes in its topology, placeable as MlxRing; last seen 1/2 nodes, "
                   "0/2 links; 10s of 60s",
                   "cluster node2: waiting for 2 nodes in its topology, placeable as MlxRing; last seen 1/2 nodes, "
                   "0/2 links; 10s of 60s"]


def test_hash_and_manifest_probes_say_how_far_they_are(tmp_path):
    (tmp_path / "model").mkdir()
    blob = os.urandom(3 * 1024 * 1024)
    (tmp_path / "model" / "w.safetensors").write_bytes(blob)
    node, got = LocalNode("node1"), []
    res = node.run_probe("hashes", {"path": str(tmp_path / "model"), "files": ["w.safetensors"], "workers": 1},
                         timeout=60, progress=got.append)
    assert res["sha256"]["w.safetensors"] == hashlib.sha256(blob).hexdigest()
    assert got and got[0]["total"] == len(blob) and got[0]["files"] == 1 and 0 < got[0]["bytes"] <= len(blob), got
    listed = []
    man = node.run_probe("manifest", {"path": str(tmp_path / "model"), "model_folder": "model"}, timeout=60,
                         progress=listed.append)
    assert [f["path"] for f in man["files"]] == ["w.safetensors"]
    assert listed == [{"bytes": len(blob), "files": 1}]
    assert not any("modeldrop-progress" in str(e.get("stderr", "")) for e in node.transcript)

"""The startup settle window overlaps the cluster-join wait: the join watch starts once every API answers,
the window is still watched in full (an exit inside it fails startup), and the cluster gate takes the
background watch's verdict, confirmed by one fresh look."""

from __future__ import annotations

from types import SimpleNamespace

from modeldrop.exo import observe
from modeldrop.exo.cluster import ExoCluster
from tests_selftest.support.exo_fakes import FakeClock
from tests_selftest.support.exo_samples import NEW_STATE, A, B, new_state

ALONE = new_state(nodeIdentities={A: {}}, topology={"nodes": [A], "connections": {}})


class Launcher:
    """A launcher whose process dies at `dies_at` (fake clock seconds)."""

    def __init__(self, clock: FakeClock, dies_at: float | None = None):
        self.clock, self.dies_at = clock, dies_at
        self.record = SimpleNamespace(start=100.0)

    def proc(self):
        alive = self.dies_at is None or self.clock() < self.dies_at
        return {"pid": 1, "start": 100.0} if alive else None


class Client:
    def __init__(self, nid: str, up_at: float, clock: FakeClock, states: list | None = None):
        self.nid, self.up_at, self.clock, self.states = nid, up_at, clock, list(states or [NEW_STATE])
        self.state_calls = 0

    def node_id(self, timeout_s: float = 3.0) -> str:
        if self.clock() < self.up_at:
            raise ConnectionRefusedError("refused")
        return self.nid

    def state(self) -> dict:
        self.state_calls += 1
        return self.states[min(self.state_calls - 1, len(self.states) - 1)]


def test_on_up_fires_when_every_api_answers_and_the_window_is_still_watched():
    c = FakeClock()
    seen: list[tuple[float, dict]] = []
    v = observe.watch_startup({1: Launcher(c), 2: Launcher(c)}, {1: Client(A, 1.0, c), 2: Client(B, 2.0, c)},
                              settle_s=10, clock=c, sleep=c.sleep, on_up=lambda ids: seen.append((c(), ids)))
    assert v.ok, v.summary
    assert seen == [(2.0, {1: A, 2: B})], "the join watch starts at API-up, before the window"
    assert v.details["elapsed_s"] >= 12.0, "the settle window is watched in full"


def test_an_exit_inside_the_window_still_fails_startup():
    c = FakeClock()
    started: list[dict] = []
    v = observe.watch_startup({1: Launcher(c), 2: Launcher(c, dies_at=6.0)},
                              {1: Client(A, 0.5, c), 2: Client(B, 0.5, c)}, settle_s=10, clock=c, sleep=c.sleep,
                              on_up=started.append)
    assert started, "the join watch had started"
    assert not v.ok and v.facts["restarted"] == [2] and "after its API had answered" in v.summary
    assert v.details["elapsed_s"] < 7.0, "the exit ends the window at once"


def _cluster(clients: dict) -> ExoCluster:
    cfg = SimpleNamespace(cluster_window_s=30.0, settle_window_s=10.0, nodes=[], instance_meta="MlxRing")
    cluster = ExoCluster(cfg, None, None)
    cluster.clients = lambda: clients  # type: ignore[method-assign]
    return cluster


def test_cluster_gate_takes_the_background_join_and_confirms_it():
    c = FakeClock()
    clients = {1: Client(A, 0, c, [ALONE, ALONE, NEW_STATE]), 2: Client(B, 0, c)}
    cluster = _cluster(clients)
    cluster.start_join_watch({1: A, 2: B})
    assert cluster.join_watch is not None and cluster.join_watch.done.wait(20)
    calls = clients[1].state_calls
    v = cluster.cluster_verdict({1: A, 2: B}, 30.0)
    assert v.ok and "joined_during_startup_s" in v.details, v.summary
    assert clients[1].state_calls == calls + 1, "one fresh look confirms the join"
    assert cluster.join_watch is None


def test_join_watch_for_other_ids_is_not_used_and_cancel_ends_it():
    c = FakeClock()
    clients = {1: Client(A, 0, c, [ALONE]), 2: Client(B, 0, c, [ALONE])}
    cluster = _cluster(clients)
    cluster.start_join_watch({1: A, 2: "other"})
    watch = cluster.join_watch
    cluster.cancel_join_watch()
    assert watch is not None and watch.done.wait(10), "a cancelled watch ends at its next look"
    clients[1].states = [NEW_STATE]
    clients[2].states = [NEW_STATE]
    v = cluster.cluster_verdict({1: A, 2: B}, 5.0)
    assert v.ok and "joined_during_startup_s" not in v.details


class CountingLauncher(Launcher):
    """A Launcher that counts its process probes; from `restart_at` it is a new process (another start)."""

    def __init__(self, clock: FakeClock, dies_at: float | None = None, restart_at: float | None = None):
        super().__init__(clock, dies_at)
        self.restart_at, self.probes = restart_at, 0

    def proc(self):
        self.probes += 1
        row = super().proc()
        if row is not None and self.restart_at is not None and self.clock() >= self.restart_at:
            row = {"pid": 2, "start": 200.0}
        return row


class DyingClient(Client):
    """An API that stops answering when its exo dies."""

    def __init__(self, nid: str, clock: FakeClock, dies_at: float):
        super().__init__(nid, 0.0, clock)
        self.dies_at = dies_at

    def node_id(self, timeout_s: float = 3.0) -> str:
        if self.clock() >= self.dies_at:
            raise ConnectionRefusedError("refused")
        return super().node_id(timeout_s)


def test_a_node_whose_api_answers_gets_a_process_probe_every_few_seconds_not_every_sample():
    """Each process probe is an SSH round trip: while the API answers (every 0.5 s sample) the process is probed
    every PROC_EVERY_S, and once more at the window's end."""
    c = FakeClock()
    launchers = {1: CountingLauncher(c), 2: CountingLauncher(c)}
    v = observe.watch_startup(launchers, {1: Client(A, 0.0, c), 2: Client(B, 0.0, c)}, settle_s=10, clock=c,
                              sleep=c.sleep)
    assert v.ok, v.summary
    samples = 10 / observe.INTERVAL_S
    for la in launchers.values():
        assert 10 / observe.PROC_EVERY_S <= la.probes <= 10 / observe.PROC_EVERY_S + 3 < samples, la.probes


def test_an_api_that_stops_answering_gets_its_process_probed_at_once():
    c = FakeClock()
    v = observe.watch_startup({1: CountingLauncher(c), 2: CountingLauncher(c, dies_at=6.1)},
                              {1: Client(A, 0.0, c), 2: DyingClient(B, c, dies_at=6.1)}, settle_s=10, clock=c,
                              sleep=c.sleep)
    assert not v.ok and v.facts["restarted"] == [2], v.summary
    assert v.details["elapsed_s"] <= 6.1 + observe.INTERVAL_S, "seen at the first sample that found no API"


def test_a_restart_the_api_never_showed_is_caught_by_the_windows_last_look():
    """A new process under the same API between two paced probes, just before the window ends: the window's
    last look probes afresh and sees the new start."""
    c = FakeClock()
    paced = 4 * observe.PROC_EVERY_S  # the last paced probe before the window's end at paced + 1 s
    v = observe.watch_startup({1: CountingLauncher(c), 2: CountingLauncher(c, restart_at=paced + 0.5)},
                              {1: Client(A, 0.0, c), 2: Client(B, 0.0, c)}, settle_s=paced + 1, clock=c,
                              sleep=c.sleep)
    assert not v.ok and v.facts["restarted"] == [2], v.summary


def test_an_api_coming_up_slowly_is_waited_for_with_paced_process_probes_and_an_exit_is_still_seen():
    """Real EXO takes seconds to answer its first /node_id: its process is probed every PROC_EVERY_S meanwhile (not at
    every sample); an exo that exits before its API ever answered is still seen within one PROC_EVERY_S."""
    c = FakeClock()
    slow = {1: CountingLauncher(c), 2: CountingLauncher(c)}
    v = observe.watch_startup(slow, {1: Client(A, 8.0, c), 2: Client(B, 8.0, c)}, settle_s=1, clock=c, sleep=c.sleep)
    assert v.ok, v.summary
    assert all(la.probes <= 8.0 / observe.PROC_EVERY_S + 3 for la in slow.values()), [la.probes for la in slow.values()]
    c2 = FakeClock()
    v = observe.watch_startup({1: CountingLauncher(c2), 2: CountingLauncher(c2, dies_at=3.0)},
                              {1: Client(A, 8.0, c2), 2: Client(B, 8.0, c2)}, settle_s=1, clock=c2, sleep=c2.sleep)
    assert not v.ok and "exited" in v.summary and v.details["elapsed_s"] <= 3.0 + observe.PROC_EVERY_S, v.summary

"""A node's exo found dead ends the placement and chat waits at once (modeldrop/exo/gone.py), not at their bounds."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from modeldrop.exo import observe
from modeldrop.exo.gone import Due
from modeldrop.verdict import Fact
from sandbox.calibration_server import CalibServer
from tests_selftest.support.exo_fakes import FakeClock
from tests_selftest.support.exo_samples import IID, R0, R1, new_state
from tests_selftest.support.listener import Listener

MODEL = "calib/model"


class StateClient:
    def __init__(self, state: dict):
        self.s = state

    def state(self) -> dict:
        return self.s


def dies_after(n_calls: int, found: dict[int, str]):
    """A `gone` that finds nothing for its first n_calls asks, then `found`; its asks are counted in `.calls`."""
    def gone() -> dict[int, str]:
        gone.calls += 1
        return dict(found) if gone.calls > n_calls else {}
    gone.calls = 0
    return gone


@pytest.fixture(scope="module")
def fast() -> Iterator[CalibServer]:
    srv = CalibServer.start(defaults={"ttft_ms": 2, "gap_ms": 1})
    yield srv
    srv.stop()


@pytest.fixture
def silent() -> Iterator[Listener]:
    """An API that accepts and never answers: a surviving node whose ring lost a member."""
    lst = Listener()
    yield lst
    lst.close()


def test_due_asks_at_most_every_interval_and_keeps_the_first_finding():
    gone = dies_after(1, {2: "pid 9"})
    due = Due(gone, 5.0, start=100.0)
    assert due.check(101.0) == {} and gone.calls == 0  # not yet time to ask
    assert due.check(105.0) == {} and gone.calls == 1
    assert due.check(107.0) == {} and gone.calls == 1
    assert due.check(110.0) == {2: "pid 9"} and gone.calls == 2
    assert due.check(200.0) == {2: "pid 9"} and gone.calls == 2  # found: never asked again
    assert Due(None, 5.0, 0.0).check(99.0) == {}

    def broken() -> dict[int, str]:
        raise OSError("ssh: connection reset")
    assert Due(broken, 5.0, 0.0).check(6.0) == {}  # a look that fails is not a death


def test_wait_ready_ends_when_an_exo_is_found_dead_long_before_the_stall():
    c = FakeClock()
    stuck = new_state(runners={R0: {"RunnerConnected": {}}, R1: {"RunnerConnected": {}}})
    gone = dies_after(1, {2: "pid 9255"})
    v = observe.wait_ready(StateClient(stuck), IID, 600, stall_s=60, clock=c, sleep=c.sleep, gone=gone,
                           gone_every_s=5)
    assert not v.ok and v.facts[Fact.exo_gone] == {2: "pid 9255"}, v
    assert 10 <= c.t < 11 and gone.calls == 2  # asked at 5 s (alive) and 10 s (dead)
    assert "not Ready after 10" in v.summary and "RunnerConnected" in v.summary
    c = FakeClock()  # nobody dies: the stall still ends it, as before
    v = observe.wait_ready(StateClient(stuck), IID, 600, stall_s=60, clock=c, sleep=c.sleep,
                           gone=dies_after(10**6, {}), gone_every_s=5)
    assert not v.ok and v.facts["stalled"] and Fact.exo_gone not in v.facts and 60 <= c.t < 65


def test_chat_requests_in_flight_are_cut_when_an_exo_dies_and_answers_already_in_are_kept(fast, silent):
    gone = dies_after(1, {2: "pid 77"})
    t0 = time.monotonic()
    v = observe.run_chats({1: fast.url, 2: silent.url}, MODEL, stall_s=60, timeout_s=90, gone=gone,
                          gone_every_s=0.3)
    wall = time.monotonic() - t0
    assert wall < 30, wall  # not the 90 s the silent node's requests were allowed
    assert not v.ok and v.facts[Fact.exo_gone] == {2: "pid 77"}
    by = {(r["node"], r["stream"]): r for r in v.details["results"]}
    assert by[1, True]["text_chars"] and by[1, False]["text_chars"] and not by[1, True].get("error")
    assert by[2, True]["error_kind"] == by[2, False]["error_kind"] == "abandoned"
    assert v.problems[0].startswith("node2 stream: abandoned: cut while in flight: the exo of node2 (pid 77)")


def test_without_a_death_the_silent_node_fails_at_its_own_bound_not_as_abandoned(fast, silent):
    v = observe.run_chats({1: fast.url, 2: silent.url}, MODEL, stall_s=2, timeout_s=2,
                          gone=dies_after(10**6, {}), gone_every_s=0.3)
    kinds = {r["error_kind"] for r in v.details["results"] if r["node"] == 2}
    assert not v.ok and "abandoned" not in kinds and kinds, v.details["results"]
    assert Fact.exo_gone not in v.facts
    v = observe.run_chats({1: fast.url}, MODEL, timeout_s=10, gone=None)
    assert v.ok, v.summary

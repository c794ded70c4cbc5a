"""Per-node work at once: `each` gives results in node order and raises the first error only after every call
ended; `together` runs unrelated calls at once the same way."""

from __future__ import annotations

import threading
import time

import pytest

from modeldrop.pernode import each, together


def test_each_runs_every_node_at_once_and_keeps_node_order():
    met = threading.Barrier(3, timeout=10)  # would break if the calls ran one after another

    def work(k: int) -> int:
        met.wait()
        time.sleep(0.01 * (4 - k))  # node 1 finishes last
        return k * 10

    assert list(each([1, 2, 3], work).items()) == [(1, 10), (2, 20), (3, 30)]


def test_each_raises_the_first_error_in_node_order_after_every_call_ended():
    ended = []

    def work(k: int) -> int:
        if k == 2:
            time.sleep(0.05)
            raise ValueError("node2 broke")
        if k == 3:
            raise KeyError("node3 broke")
        time.sleep(0.1)
        ended.append(k)
        return k

    with pytest.raises(ValueError, match="node2 broke"):
        each([1, 2, 3], work)
    assert ended == [1]


def test_together_runs_the_calls_at_once_and_returns_their_results_in_order():
    met = threading.Barrier(3, timeout=10)

    def call(value):
        def run():
            met.wait()
            return value
        return run

    assert together(call("logins"), call(None), call({"outcome": "GO"})) == ["logins", None, {"outcome": "GO"}]

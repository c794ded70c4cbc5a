"""scripts/measure_preflight.py's tape: a node's commands recorded one at a time, then answered without the node."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from modeldrop.nodes import LocalNode
from scripts.measure_preflight import ONE_AT_A_TIME, TapeNode


def test_replay_answers_what_the_node_answered_after_its_solo_time_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    taped = TapeNode(LocalNode("node1", python_cmd=sys.executable))
    facts = taped.facts()
    slow = taped.run(["sh", "-c", f"sleep 0.3; echo once >> {marker}; echo hi"], timeout=10)
    assert slow.stdout.strip() == "hi" and marker.read_text() == "once\n" and taped.solo_s >= 0.3
    replay = TapeNode(taped.inner, taped.tape)
    assert replay.facts() == facts  # the probe's result, parsed from the recorded output
    t0 = time.monotonic()
    again = replay.run(["sh", "-c", f"sleep 0.3; echo once >> {marker}; echo hi"], timeout=10)
    assert again.stdout.strip() == "hi" and time.monotonic() - t0 >= 0.3
    assert marker.read_text() == "once\n"  # answered from the tape: the command did not run again
    with pytest.raises(SystemExit, match="never ran"):
        replay.run(["true"], timeout=10)


def test_recording_runs_one_command_at_a_time_across_nodes():
    nodes = [TapeNode(LocalNode(f"node{k}", python_cmd=sys.executable)) for k in (1, 2)]
    t0 = time.monotonic()
    threads = [threading.Thread(target=n.run, args=(["sleep", "0.3"],), kwargs={"timeout": 10}) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 >= 0.6 and not ONE_AT_A_TIME.locked()

"""Timeouts nest: every gate's pytest-timeout is longer than the worst case of the bounded waits inside it
(node-side limits, hub look-ups, the cleanup after a node-side timeout, the log reads of a failure's
diagnosis), so a gate fails by its own diagnosis and its cleanup runs, never by the outer kill.

Worst cases are built from the library's own constants, with MAX_NODES nodes; where the gate runs the
nodes in parallel (preflight's check_node) one node counts.
"""

from __future__ import annotations

import pytest

from modeldrop import cleanup, download, hub, preflight, serving, verify
from modeldrop.config import MAX_NODES, OPTION_BY_KEY
from modeldrop.exo import client, launcher, logs, observe
from modeldrop.gatetable import GATES

N = MAX_NODES
DEFAULT_TIMEOUTS_S: dict[str, float] = {g.kind: g.timeout_s for g in GATES}  # the gate table's limits
MARGIN_S = 60.0  # the test's own teardown steps and scheduling
LOGS_PER_NODE = 3  # a launch record's exo stdout log, exo's log and the runner log
LOG_SCAN_S = N * LOGS_PER_NODE * logs.TAIL_TIMEOUT_S  # what a failure's diagnosis may read
STOP_S = launcher.STOP_GRACE_S + launcher.PROBE_TIMEOUT_S


def _default(key: str) -> float:
    return float(OPTION_BY_KEY[key].default)


# an HTTP call's worst case is its total deadline (connect, headers and body: a trickling server included);
# a poll that ends at its deadline may be inside one more sample, so a sample's calls count once more
CHAT_REQUEST_S = _default("CHAT_TIMEOUT_S")
STARTUP_SAMPLE_S = N * observe.NODE_ID_TIMEOUT_S
STATE_SAMPLE_S = N * client.STATE_TIMEOUT_S
SERVING_SAMPLE_S = N * observe.SERVING_CHAT_S + client.STATE_TIMEOUT_S


INNER_S: dict[str, float] = {
    "preflight": hub.HUB_TIMEOUT_S + preflight.NODE_CHECK_BUDGET_S + N * preflight.REACH_TIMEOUT_S
    + N * (launcher.PROBE_BUILD_BUDGET_S + launcher.PROBE_TIMEOUT_S)
    + serving.PROBE_TIMEOUT_S + 2 * hub.HUB_TIMEOUT_S,  # the serving verdict: nodes at once, config.json and index
    "download": hub.HUB_TIMEOUT_S + download.HF_DOWNLOAD_TIMEOUT_S + download.CLEANUP_BUDGET_S,
    # + stopping a timed-out probe
    "verify": verify.MANIFEST_TIMEOUT_S + verify.HASHES_TIMEOUT_S + cleanup.STOP_BUDGET_S,
    "canary": observe.API_UP_TIMEOUT_S + observe.CANARY_MODEL_TIMEOUT_S + STOP_S
    + LOGS_PER_NODE * logs.TAIL_TIMEOUT_S,
    "parity": 0.0,  # compares facts already gathered: no node, no hub
    "startup": _default("SETTLE_WINDOW_S") + observe.API_UP_TIMEOUT_S + 2 * STARTUP_SAMPLE_S + LOG_SCAN_S,
    "cluster": _default("CLUSTER_WINDOW_S") + observe.API_UP_TIMEOUT_S + STATE_SAMPLE_S + LOG_SCAN_S,
    # clear_instances' own 60 s, then Ready (a serving check may start at the deadline)
    "placement": 60.0 + _default("READY_TIMEOUT_S") + SERVING_SAMPLE_S + LOG_SCAN_S,
    "transport": N * observe.SOCKETS_TIMEOUT_S + 2 * LOG_SCAN_S,  # the scan, and the diagnosis on failure
    "chat": N * 2 * CHAT_REQUEST_S + LOG_SCAN_S,
}


def test_every_gate_has_a_worst_case():
    assert set(INNER_S) == set(DEFAULT_TIMEOUTS_S)


@pytest.mark.parametrize("gate", sorted(DEFAULT_TIMEOUTS_S))
def test_gate_limit_leaves_the_inner_limits_their_time(gate):
    outer, inner = DEFAULT_TIMEOUTS_S[gate], INNER_S[gate]
    assert outer >= inner + MARGIN_S, f"{gate}: pytest-timeout {outer:g}s < inner worst case {inner:g}s + {MARGIN_S:g}s"


def test_node_side_limits_are_inside_their_gates():
    assert verify.HASHES_TIMEOUT_S < DEFAULT_TIMEOUTS_S["verify"]
    assert download.HF_DOWNLOAD_TIMEOUT_S + download.CLEANUP_BUDGET_S < DEFAULT_TIMEOUTS_S["download"]
    assert download.CLEANUP_BUDGET_S >= 2 * download.PROBE_TIMEOUT_S + download.STOP_GRACE_S

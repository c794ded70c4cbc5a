"""Phase 6 — transport: the ring addresses the runners announced match /state, sockets are up, no errno lines."""

import pytest

from modeldrop.exo.logs import TRANSPORT_LINES
from modeldrop.exo.observe import check_transport, serving_check


@pytest.mark.gate("transport")
def test_transport(run_config, exo_running, exo_report, evidence, node_pool):
    """`rank N hostfile` lines == hostsByNode; ESTABLISHED sockets on the ring port (never connecting to it);
    no `[ring]`/`[jaccl] Couldn't connect (error: 60|61|65)` in any node's log. A 1-node instance has no ring.
    While /state lists no runner of the instance: the ring from the runners' own hostfile lines and sockets, else
    (nothing to check) a chat through every node, with a warning."""
    inst = exo_running.find_instance()
    if inst is None:
        exo_report.fail(message=f"no instance of {run_config.model_id} in node 1's /state",
                        facts={"vanished": True})
    evidence.note("instance_id", inst.instance_id)
    node_ids = exo_running.node_ids()
    logs = exo_running.scan_logs("cluster", match=TRANSPORT_LINES)  # since launch: a -k rerun after benchmarks
    verdict = check_transport(inst, node_ids, logs, {k: node_pool.get(k) for k in exo_running.ks},
                              serving=lambda: serving_check(exo_running.urls(), run_config.model_id))
    evidence.json("transport", verdict.details)
    evidence.note("verdict", verdict.summary)
    for line in verdict.warnings:
        evidence.note("warning", line)
    if inst.shard_count < 2:
        evidence.note("warning", "1-node instance: no ring to check")
    if not verdict.ok:
        exo_report.fail(verdict, state=exo_running.state_of(exo_running.ks[0]))

"""Phase 4 — startup: exo on every node with identical flags; every API answers; nothing exits or restarts."""

import pytest

from modeldrop.exo.cluster import stopped_existing_lines
from modeldrop.exo.launcher import LaunchError
from modeldrop.exo.observe import watch_startup


@pytest.mark.gate("startup")
def test_startup(run_config, exo_cluster, exo_report, evidence, progress):
    """Each API answers /node_id, and no pid/start or node id changes within the settle window."""
    try:
        records = exo_cluster.start()
    except LaunchError as e:
        exo_report.launch_failed(e)
    evidence.json("launches", {f"node{k}": r.to_json() for k, r in records.items()})
    evidence.note("exo synch flag", sorted({r.synch_flag for r in records.values()}))
    for line in (x for r in records.values() for x in stopped_existing_lines(r)):
        evidence.note("warning", line)
    verdict = watch_startup(exo_cluster.cluster_launchers(), exo_cluster.clients(), run_config.settle_window_s,
                            on_up=exo_cluster.start_join_watch,  # the cluster-join wait overlaps the window
                            progress=progress)
    evidence.json("startup", verdict.details)
    evidence.note("verdict", verdict.summary)
    if not verdict.ok:
        exo_cluster.cancel_join_watch()
        exo_report.fail(verdict)

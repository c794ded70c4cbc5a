"""Phase 5 — cluster: every node's API lists N nodes, linked as EXO needs to place the instance over all of them."""

import pytest

from modeldrop.exo.logs import namespace_lines
from modeldrop.exo.observe import ensure_cards


@pytest.mark.gate("cluster")
def test_cluster(run_config, exo_running, exo_report, evidence):
    """topology has the N live node ids, linked so EXO can place the configured instance over all of them (a ring
    for MlxRing, every pair for MlxJaccl), within the cluster window (else a fast stop); links no ring needs are
    noted; then every node lists a model card for the model (added with POST /models/add where missing)."""
    live_ids = exo_running.node_ids()
    evidence.json("node ids", {f"node{k}": v for k, v in live_ids.items()})
    missing = [f"node{k}" for k in exo_running.ks if k not in live_ids]
    if missing:
        exo_report.fail(message=f"API not answering /node_id on {', '.join(missing)}",
                        facts={"exited": missing})
    verdict = exo_running.cluster_verdict(live_ids, run_config.cluster_window_s)
    evidence.json("cluster", verdict.details)
    evidence.note("verdict", verdict.summary)
    if verdict.details.get("links_not_needed"):
        evidence.note("links not needed", verdict.details["links_not_needed"])
    if not verdict.ok:
        logs = exo_running.scan_logs("cluster")
        ns = {f"node{k}": sorted(set(namespace_lines(t))) for k, t in logs.items()}
        evidence.json("namespace lines", ns)
        seen = {k: v["identities"] for k, v in verdict.details["views"].items() if v}
        offline = bool(verdict.facts.get("isolated")) and not run_config.online
        hint = "; the joins ran offline (EXO_OFFLINE=true): validate the join with --online" if offline else ""
        joined = not verdict.facts.get("isolated") and not verdict.facts.get("ghosts")  # members fine: links only
        exo_report.fail(verdict, state=exo_running.state_of(exo_running.ks[0]), facts={"offline_join": offline},
                        message=verdict.summary if joined else
                        f"{verdict.summary}; nodeIdentities seen: {seen}; namespace lines: {ns}{hint}")
    # a model that just dropped has no EXO card: every node must list one before placement
    cards = ensure_cards(exo_running.clients(), run_config.model_id)
    evidence.json("model cards", cards.details)
    evidence.note("model card", cards.summary)
    if not cards.ok:
        exo_report.fail(cards, state=exo_running.state_of(exo_running.ks[0]))

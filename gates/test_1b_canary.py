"""Phase 1B — canary: exo alone on node 1 sees the audited model; stopped by pid, pass or fail."""

import pytest

from modeldrop.exo.client import ExoClient
from modeldrop.exo.cluster import stopped_existing_lines
from modeldrop.exo.launcher import LaunchError, expand_home
from modeldrop.exo.observe import canary_check


@pytest.mark.gate("node1_canary")
def test_node1_canary(run_config, exo_canary, exo_report, evidence, progress):
    """exo (offline) answers /node_id, has a card for the model (POST /models/add when it has none) and lists
    the model under /v1/models?status=downloaded."""
    try:
        rec = exo_canary.start("canary")
    except LaunchError as e:
        exo_report.launch_failed(e, role="canary")
    evidence.json("canary launch", rec.to_json())
    for line in stopped_existing_lines(rec):
        evidence.note("warning", line)
    model_dir = expand_home(run_config.node(1).model_dir, str(exo_canary.facts().get("home") or "~"))
    verdict = canary_check(exo_canary, ExoClient(exo_canary.api_url), run_config.model_id, model_dir,
                           progress=progress)
    evidence.json("canary", verdict.details)
    card = verdict.details.get("card") or {}
    if card.get("card"):
        evidence.note("model card", {"present": "EXO already had a card for the model",
                                     "added": "EXO had no card for the model: added with POST /models/add",
                                     "missing": "EXO has no card for the model and it could not be added"}[
                                         card["card"]])
    evidence.note("verdict", verdict.summary)
    if not verdict.ok:
        exo_report.fail(verdict, state=None, role="canary")

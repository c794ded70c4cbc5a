"""Phase 5 — placement: place the model on all N nodes; every runner reaches Ready/Running."""

import pytest

from modeldrop import signatures
from modeldrop.exo.observe import clear_instances, place, serving_check, wait_ready
from modeldrop.exo.state import parse_instance


@pytest.mark.gate("placement")
def test_placement(run_config, exo_running, exo_report, evidence, progress):
    """GET /instance/placement (min_nodes=N), POST /instance, then every runner Ready within the timeout,
    or, while /state shows no runner of the instance, a chat that answers through every node (serving truth)."""
    api = exo_running.clients()[exo_running.ks[0]]
    n = len(run_config.nodes)
    sharding, meta = run_config.sharding, run_config.instance_meta
    cleared = clear_instances(api, run_config.model_id)
    if cleared:
        evidence.note("warning", f"deleted earlier instance(s) of the model before placing: {', '.join(cleared)}")
    created: dict = {}
    inst, failed = place(api, run_config.model_id, sharding, meta, n, created)
    if created.get("command_id"):  # EXO's id of the create command (its log and events name it)
        evidence.note("command_id", created["command_id"])
    if failed is not None:
        exo_report.fail(failed, http={"status": failed.facts.get("http_status"),
                                      "body": failed.details.get("body")},
                        state=exo_running.state_of(exo_running.ks[0]))
    instance = parse_instance(inst)
    exo_running.instance_id = instance.instance_id
    evidence.note("instance_id", instance.instance_id)
    evidence.json("placement", inst)
    if len(instance.node_ids) != n:
        exo_report.fail(message=f"placement with min_nodes={n} put {run_config.model_id} on "
                                f"{len(instance.node_ids)} node(s), not {n}: {instance.node_ids}")
    names = {nid: f"node{k}" for k, nid in exo_running.node_ids().items()}
    ranks = sorted((r, names.get(nid, nid[:12])) for nid in instance.node_ids
                   if (r := instance.rank_of_node(nid)) is not None)
    evidence.note("ranks", " → ".join(name for _, name in ranks))
    verdict = wait_ready(api, instance.instance_id, run_config.ready_timeout_s,
                         serving=lambda: serving_check(exo_running.urls(), run_config.model_id),
                         progress=progress, names=exo_running.node_names(), model_id=run_config.model_id,
                         gone=exo_running.gone)  # a node's exo found dead ends the wait
    evidence.json("readiness", verdict.details)
    evidence.note("verdict", verdict.summary)
    evidence.note("ready_after_post_s", verdict.details.get("elapsed_s"))  # POST /instance -> every runner Ready
    if not verdict.ok:
        exo_report.fail(verdict, state=exo_running.state_of(exo_running.ks[0]))
    if verdict.facts.get("runner_lag"):  # serving truth: chat works while /state shows no runners
        evidence.note("warning", "placement passed on a working chat while /state runner maps lag: "
                                 + "; ".join(verdict.facts["runner_lag"]))
        evidence.signatures([m.as_dict() for m in signatures.match("placement", facts=verdict.facts)])

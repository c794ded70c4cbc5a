"""Phase 7 — chat: a chat completion answered through every node's API, streamed and not."""

import pytest

from modeldrop import signatures
from modeldrop.exo.observe import latency_check, run_chats, runner_lag


@pytest.mark.gate("chat")
def test_chat(run_config, exo_running, exo_report, evidence):
    """HTTP 200, a complete body, text or reasoning_content; latency recorded, and judged for stability over a few
    short requests through each node (a warning beyond --chat-spread-max, unless --chat-spread-stop). Runner maps
    are evidence only."""
    verdict = run_chats(exo_running.urls(), run_config.model_id, stall_s=run_config.chat_stall_s,
                        timeout_s=run_config.chat_timeout_s, gone=exo_running.gone)  # a dead exo ends the wait
    evidence.json("chat", verdict.details)
    evidence.note("verdict", verdict.summary)
    if not verdict.ok:
        bad = next(r for r in verdict.details["results"] if r.get("error") or not
                   (r.get("text_chars") or r.get("reasoning_chars")))
        exo_report.fail(verdict, http={"status": bad.get("status"), "error": bad.get("error"),
                                       "error_kind": bad.get("error_kind")},
                        state=exo_running.state_of(exo_running.ks[0]),
                        facts={"command_id": bad.get("command_id"), "api_url": bad.get("url")})
    evidence.note("chat_latency_s", {f"node{r['node']}-{'stream' if r['stream'] else 'json'}": r.get("latency_s")
                                     for r in verdict.details["results"]})
    stability = latency_check(exo_running.urls(), run_config.model_id, run_config.chat_spread_max,
                              run_config.chat_spread_stop, timeout_s=run_config.chat_timeout_s)
    evidence.json("latency stability", stability.details)
    evidence.note("chat latency stability", stability.summary)
    for line in stability.warnings:
        evidence.note("warning", line)
    if not stability.ok:
        exo_report.fail(stability, state=exo_running.state_of(exo_running.ks[0]))
    evidence.serving(exo_running.serving())  # where the model serves: the run summary's serving block
    inst = exo_running.find_instance()
    if inst is not None:
        lag, maps = runner_lag(exo_running.clients(), inst.instance_id)
        evidence.json("runner maps", maps)
        if lag:
            evidence.note("warning", "chat works while /state runner maps lag: " + "; ".join(lag))
            evidence.signatures([m.as_dict() for m in signatures.match(evidence.gate, facts={"runner_lag": lag})])

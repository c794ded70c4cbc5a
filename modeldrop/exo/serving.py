"""Where the model serves, as the run summary says it: each node's API URL and node id, the model and instance id,
sharding and instance kind, and a chat command to paste (`serving_block`; `serving_at` for an EXO seen only through
its API URLs). Plain data; the ledger keeps it."""

from __future__ import annotations

import json
import shlex
from typing import Any

from modeldrop.exo.client import ExoClient
from modeldrop.exo.state import instances_for_model
from modeldrop.exo.wait import call_safely
from modeldrop.pernode import each

CURL_PROMPT = "Say hello in one short sentence."


def chat_curl(api_url: str, model_id: str) -> str:
    """A chat completion through `api_url`, as a command to paste."""
    body = json.dumps({"model": model_id, "messages": [{"role": "user", "content": CURL_PROMPT}],
                       "max_tokens": 64})
    return (f"curl -s {shlex.quote(api_url.rstrip('/') + '/v1/chat/completions')} "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")


def serving_block(model_id: str, api_urls: dict[str, str], node_ids: dict[str, str] | None = None,
                  instance_id: str | None = None, sharding: str | None = None,
                  instance_kind: str | None = None) -> dict[str, Any]:
    """{model, instance_id, sharding, instance_kind, nodes: [{node, api_url, node_id}], curl, stopped}
    (`api_urls` and `node_ids` keyed by node name, `node1`…; the curl goes through the first node)."""
    nodes = [{"node": name, "api_url": url, "node_id": (node_ids or {}).get(name)}
             for name, url in sorted(api_urls.items())]
    return {"model": model_id, "instance_id": instance_id, "sharding": sharding, "instance_kind": instance_kind,
            "nodes": nodes, "curl": chat_curl(nodes[0]["api_url"], model_id) if nodes else None, "stopped": None}


def instance_shape(inst: Any) -> tuple[str | None, str | None]:
    """(sharding, instance kind) of a `state.Instance` as the options name them: (`Pipeline`, `MlxRing`)."""
    if inst is None:
        return None, None
    kinds = [sh.kind for sh in inst.runner_to_shard.values() if sh.kind]
    sharding = kinds[0].removesuffix("ShardMetadata") if kinds else None
    return sharding, (inst.kind.removesuffix("Instance") if inst.kind else None)


def serving_at(model_id: str, urls: list[str], node_ids: dict[str, str] | None = None) -> dict[str, Any]:
    """The serving block of an EXO seen only through its API URLs (node1… in order): each node's id (asked when
    not given), the model's instance from the first node's /state; whatever cannot be read is left None."""
    if node_ids is None:
        asked = each(range(1, len(urls) + 1),
                     lambda k: call_safely(lambda: ExoClient(urls[k - 1]).node_id(timeout_s=5))[0])
        node_ids = {f"node{k}": nid for k, nid in asked.items() if isinstance(nid, str)}  # every node at once
    state, _ = call_safely(ExoClient(urls[0]).state)
    inst = next(iter(instances_for_model(state, model_id)), None) if isinstance(state, dict) else None
    sharding, kind = instance_shape(inst)
    return serving_block(model_id, {f"node{k}": u for k, u in enumerate(urls, 1)}, node_ids,
                         inst.instance_id if inst else None, sharding, kind)

"""Where the model serves, as the run summary says it: each node's API URL and node id, the model and instance id,
sharding and instance kind, and a chat command to paste (`serving_block`). Plain data; the ledger keeps it."""

from __future__ import annotations

import json
import shlex
from typing import Any

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

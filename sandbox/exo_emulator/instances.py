"""The model-card and instance endpoints of exo's API, as bodies for a 200 (errors raised).

Contract: each function takes the node and the request's query or JSON body and returns the JSON body
exo answers with 200, or raises ``HttpError`` / ``Unprocessable`` with exo's error (FastAPI's 422 for a
body or query that does not validate): ``add_model`` (``POST /models/add``), ``placement_of`` (``GET
/instance/placement``), ``previews_of`` (``GET /instance/previews``), ``create_instance`` (``POST
/instance``), ``place_instance`` (``POST /place_instance``), ``get_instance`` / ``delete_instance``
(``/instance/<id>``). ``await_instance`` streams ``GET /instance/await`` (NEW) itself. A card is
``ModelCard.load``'s: built-in, custom, synced, else built from the local model files.
"""

from __future__ import annotations

import re
import time
from typing import Any

from . import chat as C
from .cards import card_json, model_list_entry
from .chunked import ChunkedWriter
from .http_errors import HttpError, Unprocessable, enum_error
from .ids import new_uuid
from .placement import place, previews
from .state import unwrap

META_VALUES = ("MlxRing", "MlxJaccl")
SHARDING_VALUES = ("Pipeline", "Tensor")


def place_params(q: dict[str, list[str]]) -> tuple[str, str, str, int]:
    """(model_id, sharding, instance_meta, min_nodes) of a placement query (422 with every bad field)."""
    errors = []
    model_id = q.get("model_id", [None])[0]
    if model_id is None:
        errors.append({"type": "missing", "loc": ["query", "model_id"], "msg": "Field required", "input": None})
    sharding = q.get("sharding", ["Pipeline"])[0]
    meta = q.get("instance_meta", ["MlxRing"])[0]
    if sharding not in SHARDING_VALUES:
        errors.append(enum_error("sharding", sharding, SHARDING_VALUES))
    if meta not in META_VALUES:
        errors.append(enum_error("instance_meta", meta, META_VALUES))
    raw_min = q.get("min_nodes", ["1"])[0]
    try:
        min_nodes = int(raw_min)
    except ValueError:
        min_nodes = 1
        errors.append({"type": "int_parsing", "loc": ["query", "min_nodes"],
                       "msg": "Input should be a valid integer, unable to parse string as an integer",
                       "input": raw_min})
    if errors:
        raise Unprocessable(errors)
    return str(model_id), sharding, meta, min_nodes


def card_for(node: Any, model_id: str) -> dict[str, Any]:
    """``ModelCard.load``: built-in, custom, synced, else built from the local model files (so
    placement works with no card); an id with neither would need an HF fetch, which the emulator
    never does — the unguarded exception is FastAPI's plain 500, as exo offline."""
    card = node.card_or_local(model_id)
    if card is None:
        raise RuntimeError(f"Failed to fetch model card for {model_id}: no HF access")
    return card


def card_or_400(node: Any, model_id: str) -> dict[str, Any]:
    """``/instance/previews`` wraps the card failure into 400 ``Failed to load model card: ...``."""
    try:
        return card_for(node, model_id)
    except RuntimeError as exc:
        raise HttpError(400, f"Failed to load model card: {exc}") from None


def add_model(node: Any, body: Any) -> dict[str, Any]:
    """``POST /models/add``: the card from the local files (exo reads them offline), sent to the
    cluster as ``AddCustomModelCard``; 400 ``Failed to fetch model: ...`` when it cannot be built."""
    if not isinstance(body, dict) or not isinstance(body.get("model_id"), str):
        raise Unprocessable([{"type": "missing", "loc": ["body", "model_id"], "msg": "Field required",
                              "input": body}])
    model_id = body["model_id"]
    if node.cfg.faults.card_add_fails:
        raise HttpError(400, f"Failed to fetch model: Failed to download file {model_id=} path='config.json'")
    card = node.card_or_local(model_id)
    if card is None:
        raise HttpError(400, f"Failed to fetch model: File config.json not found locally for {model_id} "
                             "and the hub is unreachable")
    card = {**card, "is_custom": True}
    node.send_command({"kind": "AddCustomModelCard", "card": card_json(card, "new")})
    return model_list_entry(card, node.cfg.generation)


def placement_of(node: Any, q: dict[str, list[str]]) -> dict[str, Any]:
    """``GET /instance/placement``: the instance placement would create now (400 when none fits)."""
    model_id, sharding, meta, min_nodes = place_params(q)
    card = card_for(node, model_id)
    try:
        return place(node.state_data(), card, sharding, meta, min_nodes, node.cfg.generation)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None


def previews_of(node: Any, q: dict[str, list[str]]) -> dict[str, Any]:
    """``GET /instance/previews``: every placement that could be made (none on an empty topology)."""
    model_id = q.get("model_id", [None])[0]
    if model_id is None:
        raise Unprocessable([{"type": "missing", "loc": ["query", "model_id"], "msg": "Field required",
                              "input": None}])
    state = node.state_data()
    if not state["topology"]["nodes"]:
        return {"previews": []}
    card = card_or_400(node, model_id)
    required = set(q["node_ids"]) if q.get("node_ids") else None
    return {"previews": previews(state, card, node.cfg.generation, required)}


def create_instance(node: Any, body: Any) -> dict[str, Any]:
    """``POST /instance``: a given instance, when the cluster's available memory holds the model."""
    if not isinstance(body, dict) or "instance" not in body:
        raise Unprocessable([{"type": "missing", "loc": ["body", "instance"], "msg": "Field required",
                              "input": body}])
    inst = body["instance"]
    if not isinstance(inst, dict) or len(inst) != 1 or tag_of(inst) not in ("MlxRingInstance", "MlxJacclInstance"):
        raise Unprocessable([{"type": "union_tag_invalid", "loc": ["body", "instance"],
                              "msg": "Input tag not found for tagged union", "input": inst}])
    card = card_for(node, unwrap(inst)["shardAssignments"]["modelId"])
    state = node.state_data()
    required = card["storage_size"]["in_bytes"]
    available = sum(int(m.get("ramAvailable", {}).get("inBytes", 0)) for m in state["nodeMemory"].values())
    if required > available:
        raise HttpError(400, f"Insufficient memory to create instance. Required: {required / 1024**3:.1f}GB, "
                             f"Available: {available / 1024**3:.1f}GB")
    cid = new_uuid()
    node.send_command({"kind": "CreateInstance", "instance": inst})
    return {"message": "Command received.", "command_id": cid, "model_card": card_json(card, node.cfg.generation)}


def place_instance(node: Any, body: Any) -> dict[str, Any]:
    """``POST /place_instance``: the master places and creates the instance."""
    if not isinstance(body, dict) or "model_id" not in body:
        raise Unprocessable([{"type": "missing", "loc": ["body", "model_id"], "msg": "Field required",
                              "input": body}])
    sharding = body.get("sharding", "Pipeline")
    meta = body.get("instance_meta", "MlxRing")
    errors = []
    if sharding not in SHARDING_VALUES:
        errors.append(enum_error("sharding", sharding, SHARDING_VALUES) | {"loc": ["body", "sharding"]})
    if meta not in META_VALUES:
        errors.append(enum_error("instance_meta", meta, META_VALUES) | {"loc": ["body", "instance_meta"]})
    if errors:
        raise Unprocessable(errors)
    card = card_for(node, str(body["model_id"]))
    cid = new_uuid()
    node.send_command({"kind": "PlaceInstance", "card": card, "sharding": sharding, "instanceMeta": meta,
                       "minNodes": int(body.get("min_nodes", 1))})
    return {"message": "Command received.", "command_id": cid, "model_card": card_json(card, node.cfg.generation)}


def get_instance(node: Any, iid: str) -> dict[str, Any]:
    """``GET /instance/<id>``."""
    inst = node.api_state()["instances"].get(iid)
    if inst is None:
        raise HttpError(404, "Instance not found")
    return inst


def delete_instance(node: Any, iid: str) -> dict[str, Any]:
    """``DELETE /instance/<id>``."""
    if iid not in node.state_data()["instances"]:
        raise HttpError(404, "Instance not found")
    cid = new_uuid()
    node.send_command({"kind": "DeleteInstance", "instanceId": iid})
    return {"message": "Command received.", "command_id": cid, "instance_id": iid}


def await_instance(h: Any, node: Any, q: dict[str, list[str]]) -> None:
    """``GET /instance/await`` (NEW) on handler ``h``: keep-alives until an instance of the model exists
    (``ready`` with its snake_case body) or the timeout (``timeout``), at most 300 s."""
    model_id = q.get("model_id", [""])[0]
    timeout = min(float(q.get("timeout_seconds", ["30"])[0]), 300.0)
    stream = ChunkedWriter(h, "text/event-stream")
    stream.write(C.comment("keep-alive"))
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while True:
        inst = node.instance_for_model(model_id)
        if inst is not None:
            stream.write(C.sse({"type": "ready", "instance": {tag_of(inst): snake_instance(inst)}}))
            break
        if time.monotonic() >= deadline:
            stream.write(C.sse({"type": "timeout", "message": f"No instance found for model {model_id}"}))
            break
        if time.monotonic() - last >= 10:
            stream.write(C.comment("keep-alive"))
            last = time.monotonic()
        time.sleep(0.1)
    stream.finish()


def tag_of(obj: dict[str, Any]) -> str:
    return next(iter(obj))


def snake_instance(inst: dict[str, Any]) -> dict[str, Any]:
    """The un-aliased (snake_case) instance body used by ``/instance/await`` (which keeps the union tag
    around it: ``{"MlxRingInstance": <this>}``); class-name keys (shard tags) are kept as they are."""

    def conv(o: Any, keep: bool = False) -> Any:
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                id_keyed = k in ("runnerToShard", "nodeToRunner", "hostsByNode", "jacclCoordinators")
                nk = k if (keep or k[:1].isupper()) else re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower()
                out[nk] = {kk: conv(vv) for kk, vv in v.items()} if id_keyed and isinstance(v, dict) else conv(v)
            return out
        if isinstance(o, list):
            return [conv(v) for v in o]
        return o

    return conv(unwrap(inst))

"""exo's HTTP API on stdlib ``http.server``: HTTP/1.1, chunked streams.

Contract: routes, status codes and JSON bodies follow real exo's for the node's generation;
exo errors are ``{"error":{"message","type":"<HTTP phrase>","param":null,"code":N}}``, request
validation errors are FastAPI's 422 ``{"detail":[...]}``; unknown GET paths fall through to the
dashboard (``/`` serves a page, anything else 404 ``Not Found``).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exo_emulator import chat as C
from exo_emulator.cards import card_json, model_list_entry
from exo_emulator.ids import new_uuid
from exo_emulator.logs import logger
from exo_emulator.placement import place, previews
from exo_emulator.state import unwrap

DASHBOARD = b"<!doctype html><html><head><title>EXO</title></head><body><div id=app>EXO</div></body></html>"
META_VALUES = ("MlxRing", "MlxJaccl")
SHARDING_VALUES = ("Pipeline", "Tensor")


class HttpError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Unprocessable(Exception):
    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__("422")
        self.detail = detail


def exo_error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": HTTPStatus(code).phrase, "param": None, "code": code}}


def _enum_error(loc: str, value: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    exp = " or ".join(f"'{v}'" for v in allowed)
    return {"type": "enum", "loc": ["query", loc], "msg": f"Input should be {exp}", "input": value,
            "ctx": {"expected": exp}}


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, node: Any, addr: str, port: int) -> None:
        self.node = node
        super().__init__((addr, port), Handler, bind_and_activate=False)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """exo runs hypercorn without an access log: requests are not logged."""

    # ---- plumbing ----------------------------------------------------------------------------------
    @property
    def node(self) -> Any:
        return self.server.node

    def _send_json(self, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("access-control-allow-origin", "*")
        self.end_headers()
        if self.command == "GET" and urllib.parse.urlsplit(self.path).path in self.node.cfg.faults.api_trickle:
            trickle(self.wfile.write, data, self.node)
        else:
            self.wfile.write(data)

    def _body(self) -> Any:
        raw = self._raw
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise Unprocessable([{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                                  "input": {}, "ctx": {"error": "Expecting value"}}]) from None

    def _dispatch(self, method: str) -> None:
        n = int(self.headers.get("content-length") or 0)
        self._raw = self.rfile.read(n) if n else b""  # always consumed: keeps keep-alive framing intact
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        try:
            handled = self._route(method, url.path, query)
            if not handled:
                if method == "GET" and url.path in ("/", "/index.html"):
                    self._html()
                else:
                    raise HttpError(404 if method == "GET" else 405,
                                    "Not Found" if method == "GET" else "Method Not Allowed")
        except HttpError as e:
            self._send_json(e.code, exo_error(e.code, e.message))
        except Unprocessable as e:
            self._send_json(422, {"detail": e.detail})
        except C.RequestError as e:
            self._send_json(422, {"detail": e.detail})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - FastAPI gives a plain 500
            logger.error(f"Exception in ASGI application\n{type(exc).__name__}: {exc}", "hypercorn.error:log:1")
            data = b"Internal Server Error"
            self.send_response(500)
            self.send_header("content-type", "text/plain; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def _html(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(DASHBOARD)))
        self.end_headers()
        self.wfile.write(DASHBOARD)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("access-control-allow-origin", "*")
        self.send_header("access-control-allow-methods", "*")
        self.send_header("access-control-allow-headers", "*")
        self.send_header("content-length", "0")
        self.end_headers()

    # ---- routing -----------------------------------------------------------------------------------
    def _route(self, method: str, path: str, q: dict[str, list[str]]) -> bool:
        n = self.node
        if method == "GET":
            if path == "/node_id":
                self._send_json(200, n.node_id)
            elif path == "/state":
                self._send_json(200, n.api_state())
            elif path.startswith("/state/"):
                self._send_json(200, self._state_path(path[len("/state/"):]))
            elif path == "/events":
                self._send_json(200, n.cluster_events())
            elif path in ("/models", "/v1/models"):
                self._models(q)
            elif path == "/instance/placement":
                self._placement(q)
            elif path == "/instance/previews":
                self._previews(q)
            elif path == "/instance/await" and n.cfg.is_new:
                self._await(q)
            elif path.startswith("/instance/") and path.count("/") == 2:
                self._get_instance(path.split("/")[2])
            elif path == "/ollama/api/version":
                self._send_json(200, {"version": "1.0.0"})
            else:
                return False
            return True
        if method == "POST":
            if path == "/instance":
                self._create_instance(self._body())
            elif path == "/models/add":
                self._add_model(self._body())
            elif path == "/place_instance":
                self._place_instance(self._body())
            elif path in ("/v1/chat/completions", "/bench/chat/completions"):
                self._chat(self._body(), bench=path.startswith("/bench"))
            else:
                return False
            return True
        if method == "DELETE" and path.startswith("/instance/") and path.count("/") == 2:
            self._delete_instance(path.split("/")[2])
            return True
        return False

    # ---- state / models ----------------------------------------------------------------------------
    def _state_path(self, sub: str) -> Any:
        cur: Any = self.node.api_state()
        parts = [urllib.parse.unquote(p) for p in sub.split("/") if p]
        for p in parts:
            if isinstance(cur, dict) and p in cur:
                cur = cur[p]
            elif isinstance(cur, list) and p.lstrip("-").isdigit() and -len(cur) <= int(p) < len(cur):
                cur = cur[int(p)]
            else:
                raise HttpError(404, f"unable to find path '{'.'.join(parts)}' in state json")
        return cur

    def _models(self, q: dict[str, list[str]]) -> None:
        cards = self.node.all_cards()
        gen = self.node.cfg.generation
        if q.get("status", [None])[0] == "downloaded":
            done = self.node.downloaded_model_ids()
            cards = [c for c in cards if c["model_id"] in done]
        self._send_json(200, {"object": "list", "data": [model_list_entry(c, gen) for c in cards]})

    # ---- placement ---------------------------------------------------------------------------------
    def _place_params(self, q: dict[str, list[str]]) -> tuple[str, str, str, int]:
        errors = []
        model_id = q.get("model_id", [None])[0]
        if model_id is None:
            errors.append({"type": "missing", "loc": ["query", "model_id"], "msg": "Field required", "input": None})
        sharding = q.get("sharding", ["Pipeline"])[0]
        meta = q.get("instance_meta", ["MlxRing"])[0]
        if sharding not in SHARDING_VALUES:
            errors.append(_enum_error("sharding", sharding, SHARDING_VALUES))
        if meta not in META_VALUES:
            errors.append(_enum_error("instance_meta", meta, META_VALUES))
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

    def _card(self, model_id: str) -> dict[str, Any]:
        """``ModelCard.load``: built-in, custom, synced, else built from the local model files (so
        placement works with no card); an id with neither would need an HF fetch, which the emulator
        never does — the unguarded exception is FastAPI's plain 500, as exo offline."""
        card = self.node.card_or_local(model_id)
        if card is None:
            raise RuntimeError(f"Failed to fetch model card for {model_id}: no HF access")
        return card

    def _add_model(self, body: Any) -> None:
        """``POST /models/add``: the card from the local files (exo reads them offline), sent to the
        cluster as ``AddCustomModelCard``; 400 ``Failed to fetch model: ...`` when it cannot be built."""
        if not isinstance(body, dict) or not isinstance(body.get("model_id"), str):
            raise Unprocessable([{"type": "missing", "loc": ["body", "model_id"], "msg": "Field required",
                                  "input": body}])
        model_id = body["model_id"]
        if self.node.cfg.faults.card_add_fails:
            raise HttpError(400, f"Failed to fetch model: Failed to download file {model_id=} path='config.json'")
        card = self.node.card_or_local(model_id)
        if card is None:
            raise HttpError(400, f"Failed to fetch model: File config.json not found locally for {model_id} "
                                 "and the hub is unreachable")
        card = {**card, "is_custom": True}
        self.node.send_command({"kind": "AddCustomModelCard", "card": card_json(card, "new")})
        row = model_list_entry(card, self.node.cfg.generation)
        self._send_json(200, row)

    def _card_or_400(self, model_id: str) -> dict[str, Any]:
        """``/instance/previews`` wraps the card failure into 400 ``Failed to load model card: ...``."""
        try:
            return self._card(model_id)
        except RuntimeError as exc:
            raise HttpError(400, f"Failed to load model card: {exc}") from None

    def _placement(self, q: dict[str, list[str]]) -> None:
        model_id, sharding, meta, min_nodes = self._place_params(q)
        card = self._card(model_id)
        try:
            inst = place(self.node.state_data(), card, sharding, meta, min_nodes, self.node.cfg.generation)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        self._send_json(200, inst)

    def _previews(self, q: dict[str, list[str]]) -> None:
        model_id = q.get("model_id", [None])[0]
        if model_id is None:
            raise Unprocessable([{"type": "missing", "loc": ["query", "model_id"], "msg": "Field required",
                                  "input": None}])
        state = self.node.state_data()
        if not state["topology"]["nodes"]:
            self._send_json(200, {"previews": []})
            return
        card = self._card_or_400(model_id)
        required = set(q["node_ids"]) if q.get("node_ids") else None
        self._send_json(200, {"previews": previews(state, card, self.node.cfg.generation, required)})

    def _create_instance(self, body: Any) -> None:
        if not isinstance(body, dict) or "instance" not in body:
            raise Unprocessable([{"type": "missing", "loc": ["body", "instance"], "msg": "Field required",
                                  "input": body}])
        inst = body["instance"]
        if not isinstance(inst, dict) or len(inst) != 1 or tag_of(inst) not in ("MlxRingInstance", "MlxJacclInstance"):
            raise Unprocessable([{"type": "union_tag_invalid", "loc": ["body", "instance"],
                                  "msg": "Input tag not found for tagged union", "input": inst}])
        card = self._card(unwrap(inst)["shardAssignments"]["modelId"])
        state = self.node.state_data()
        required = card["storage_size"]["in_bytes"]
        available = sum(int(m.get("ramAvailable", {}).get("inBytes", 0)) for m in state["nodeMemory"].values())
        if required > available:
            raise HttpError(400, f"Insufficient memory to create instance. Required: {required / 1024**3:.1f}GB, "
                                 f"Available: {available / 1024**3:.1f}GB")
        cid = new_uuid()
        self.node.send_command({"kind": "CreateInstance", "instance": inst})
        self._send_json(200, {"message": "Command received.", "command_id": cid,
                              "model_card": card_json(card, self.node.cfg.generation)})

    def _place_instance(self, body: Any) -> None:
        if not isinstance(body, dict) or "model_id" not in body:
            raise Unprocessable([{"type": "missing", "loc": ["body", "model_id"], "msg": "Field required",
                                  "input": body}])
        sharding = body.get("sharding", "Pipeline")
        meta = body.get("instance_meta", "MlxRing")
        errors = []
        if sharding not in SHARDING_VALUES:
            errors.append(_enum_error("sharding", sharding, SHARDING_VALUES) | {"loc": ["body", "sharding"]})
        if meta not in META_VALUES:
            errors.append(_enum_error("instance_meta", meta, META_VALUES) | {"loc": ["body", "instance_meta"]})
        if errors:
            raise Unprocessable(errors)
        card = self._card(str(body["model_id"]))
        cid = new_uuid()
        self.node.send_command({"kind": "PlaceInstance", "card": card, "sharding": sharding, "instanceMeta": meta,
                                "minNodes": int(body.get("min_nodes", 1))})
        self._send_json(200, {"message": "Command received.", "command_id": cid,
                              "model_card": card_json(card, self.node.cfg.generation)})

    def _get_instance(self, iid: str) -> None:
        inst = self.node.api_state()["instances"].get(iid)
        if inst is None:
            raise HttpError(404, "Instance not found")
        self._send_json(200, inst)

    def _delete_instance(self, iid: str) -> None:
        if iid not in self.node.state_data()["instances"]:
            raise HttpError(404, "Instance not found")
        cid = new_uuid()
        self.node.send_command({"kind": "DeleteInstance", "instanceId": iid})
        self._send_json(200, {"message": "Command received.", "command_id": cid, "instance_id": iid})

    def _await(self, q: dict[str, list[str]]) -> None:
        model_id = q.get("model_id", [""])[0]
        timeout = min(float(q.get("timeout_seconds", ["30"])[0]), 300.0)
        stream = ChunkedWriter(self, "text/event-stream")
        stream.write(C.comment("keep-alive"))
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while True:
            inst = self.node.instance_for_model(model_id)
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

    # ---- chat --------------------------------------------------------------------------------------
    def _chat(self, body: Any, bench: bool) -> None:
        from exo_emulator.serve import serve_chat

        req = C.parse_chat(body, bench)
        inst = self.node.instance_for_model(req.model)
        if inst is None:
            raise HttpError(404, f"No instance found for model {req.model}")
        req.resolve_thinking(_capabilities(self.node, inst, req.model))
        req.node_ids = list(unwrap(inst)["shardAssignments"]["nodeToRunner"])
        req.command_id = new_uuid()
        serve_chat(self, req)


def _capabilities(node: Any, inst: dict[str, Any], model_id: str) -> list[str]:
    """The instance's model card capabilities (its shard's card; else the node's card for the id)."""
    try:
        shard = next(iter(next(iter(inst.values()))["shardAssignments"]["runnerToShard"].values()))
        return list(next(iter(shard.values()))["modelCard"].get("capabilities") or [])
    except (StopIteration, KeyError, AttributeError, TypeError):
        card = node.find_card(model_id)
        return list(card["capabilities"]) if card else []


def tag_of(obj: dict[str, Any]) -> str:
    return next(iter(obj))


def snake_instance(inst: dict[str, Any]) -> dict[str, Any]:
    """The un-aliased (snake_case) instance body used by ``/instance/await`` (which keeps the union tag
    around it: ``{"MlxRingInstance": <this>}``); class-name keys (shard tags) are kept as they are."""
    import re

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


TRICKLE_INTERVAL_S = 1.0


def trickle(write: Any, data: bytes, node: Any) -> None:
    """The fault switches' pace: `data` one byte every TRICKLE_INTERVAL_S until it is all sent, the client
    leaves (the write raises) or exo stops."""
    for i in range(len(data)):
        if node.stopped.is_set():
            return
        write(data[i:i + 1])
        node.stopped.wait(TRICKLE_INTERVAL_S)


class ChunkedWriter:
    """Chunked transfer-encoding response; ``abort()`` drops the connection without the last chunk."""

    def __init__(self, handler: BaseHTTPRequestHandler, content_type: str) -> None:
        self.h = handler
        handler.send_response(200)
        handler.send_header("content-type", content_type)
        handler.send_header("transfer-encoding", "chunked")
        handler.send_header("cache-control", "no-cache")
        handler.send_header("access-control-allow-origin", "*")
        handler.end_headers()
        handler.wfile.flush()

    def write(self, data: bytes) -> None:
        if data:
            self.h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.h.wfile.flush()

    def finish(self) -> None:
        self.h.wfile.write(b"0\r\n\r\n")
        self.h.wfile.flush()

    def abort(self) -> None:
        self.h.close_connection = True
        try:
            self.h.wfile.flush()
            self.h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

"""exo's HTTP API on stdlib ``http.server``: HTTP/1.1, chunked streams.

Contract: routes, status codes and JSON bodies follow real exo's for the node's generation;
exo errors are ``{"error":{"message","type":"<HTTP phrase>","param":null,"code":N}}``, request
validation errors are FastAPI's 422 ``{"detail":[...]}`` (``http_errors``); unknown GET paths fall
through to the dashboard (``/`` serves a page, anything else 404 ``Not Found``). The card and instance
endpoints are ``instances``; chat is served by ``serve``.
"""

from __future__ import annotations

import json
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import chat as C
from . import instances as I
from .cards import model_list_entry
from .chunked import trickle
from .http_errors import HttpError, Unprocessable, exo_error
from .ids import new_uuid
from .logs import logger
from .serve import serve_chat
from .state import unwrap

DASHBOARD = b"<!doctype html><html><head><title>EXO</title></head><body><div id=app>EXO</div></body></html>"


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
                self._send_json(200, I.placement_of(n, q))
            elif path == "/instance/previews":
                self._send_json(200, I.previews_of(n, q))
            elif path == "/instance/await" and n.cfg.is_new:
                I.await_instance(self, n, q)
            elif path.startswith("/instance/") and path.count("/") == 2:
                self._send_json(200, I.get_instance(n, path.split("/")[2]))
            elif path == "/ollama/api/version":
                self._send_json(200, {"version": "1.0.0"})
            else:
                return False
            return True
        if method == "POST":
            if path == "/instance":
                self._send_json(200, I.create_instance(n, self._body()))
            elif path == "/models/add":
                self._send_json(200, I.add_model(n, self._body()))
            elif path == "/place_instance":
                self._send_json(200, I.place_instance(n, self._body()))
            elif path in ("/v1/chat/completions", "/bench/chat/completions"):
                self._chat(self._body(), bench=path.startswith("/bench"))
            else:
                return False
            return True
        if method == "DELETE" and path.startswith("/instance/") and path.count("/") == 2:
            self._send_json(200, I.delete_instance(n, path.split("/")[2]))
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

    # ---- chat --------------------------------------------------------------------------------------
    def _chat(self, body: Any, bench: bool) -> None:
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


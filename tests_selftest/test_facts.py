"""RunFacts: the exo session of a node is the node id its API answers now; a dead API never matches."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

from modeldrop.facts import RunFacts


class _NodeId(BaseHTTPRequestHandler):
    node_id = "3f2a9c1b7d4e5f60718293a4b5c6d7e8"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps(self.node_id).encode()
        self.send_response(200 if self.path == "/node_id" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _facts(port: int) -> RunFacts:
    node = SimpleNamespace(address=lambda: "127.0.0.1")
    pool = SimpleNamespace(get=lambda k: node)
    return RunFacts(SimpleNamespace(api_port=port), pool)


def test_exo_session_is_the_answering_node_id_and_unreachable_never_matches():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NodeId)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    facts = _facts(port)
    try:
        assert facts.exo_session(1) == _NodeId.node_id
        _NodeId.node_id = "1c0f0000000000000000000000005678"  # exo restarted: a new id
        assert facts.exo_session(1) == "1c0f0000000000000000000000005678"
    finally:
        server.shutdown()
        server.server_close()
    first, second = facts.exo_session(1), facts.exo_session(1)
    assert first.startswith("unreachable:") and first != second

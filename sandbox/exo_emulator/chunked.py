"""A chunked HTTP/1.1 response body, as exo's API sends streams and (non-stream) chat replies; the trickle
faults' pace."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler
from typing import Any


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


TRICKLE_INTERVAL_S = 1.0


def trickle(write: Any, data: bytes, node: Any) -> None:
    """The trickle fault switches' pace: `data` one byte every TRICKLE_INTERVAL_S until it is all sent, the
    client leaves (the write raises) or exo stops."""
    for i in range(len(data)):
        if node.stopped.is_set():
            return
        write(data[i:i + 1])
        node.stopped.wait(TRICKLE_INTERVAL_S)

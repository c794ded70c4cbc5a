"""A chunked HTTP/1.1 response body, as exo's API sends streams and (non-stream) chat replies."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler


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

"""A tiny HTTP server that answers every request slowly on purpose, for the total-deadline tests.

`TrickleServer(body, mode, interval_s)` listens on 127.0.0.1 (an ephemeral port) and answers each request with
`body` one byte every `interval_s`: mode `headers` trickles the status line and headers too, `length` sends the
headers (with Content-Length) at once and trickles the body, `close` sends HTTP/1.0 headers without a length
and trickles a close-delimited body. It stops sending when the client goes away or after `max_s`; `stop()`
closes every socket. `url`, and `served` (requests answered so far).
"""

from __future__ import annotations

import socket
import time

from tests_selftest.support.listener import Listener

MODES = ("headers", "length", "close")


class TrickleServer:
    """See the module docstring."""

    def __init__(self, body: bytes, mode: str = "length", interval_s: float = 1.0, max_s: float = 60.0,
                 content_type: str = "application/json"):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        self.body, self.mode, self.interval_s, self.max_s = body, mode, interval_s, max_s
        self.content_type = content_type
        self.served = 0
        self.listener = Listener(self._answer)
        self.url = self.listener.url

    def _head(self) -> bytes:
        if self.mode == "close":
            return f"HTTP/1.0 200 OK\r\ncontent-type: {self.content_type}\r\n\r\n".encode()
        return (f"HTTP/1.1 200 OK\r\ncontent-type: {self.content_type}\r\ncontent-length: {len(self.body)}\r\n"
                "\r\n").encode()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.served += 1
                head = self._head()
                slow = head + self.body if self.mode == "headers" else self.body
                if self.mode != "headers":
                    conn.sendall(head)
                end = time.monotonic() + self.max_s
                for i in range(len(slow)):
                    if time.monotonic() > end:
                        return
                    conn.sendall(slow[i:i + 1])
                    time.sleep(self.interval_s)  # the server's pace, not a synchronisation
            except OSError:
                return

    def stop(self) -> None:
        self.listener.close()

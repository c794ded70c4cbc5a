"""Newline-delimited JSON over TCP: the emulator's cluster link framing.

Contract: ``JsonConn.send`` is thread-safe and never raises on a dead peer (it marks the
connection closed); ``recv`` returns ``None`` at EOF or on a broken line.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any


class JsonConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._rfile = sock.makefile("rb")
        self._lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, host: str, port: int, timeout: float = 5.0, source: str | None = None) -> JsonConn:
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def send(self, obj: dict[str, Any]) -> bool:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self.closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                self.closed = True
                return False

    def recv(self) -> dict[str, Any] | None:
        try:
            line = self._rfile.readline()
        except (OSError, ValueError):
            return None
        if not line:
            return None
        try:
            return json.loads(line)
        except ValueError:
            return None

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

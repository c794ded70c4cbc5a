"""A loopback TCP listener for the self-tests' stand-in servers: bind an ephemeral port, accept in a thread.

`Listener(on_conn, addr, family)` listens on `addr` (127.0.0.1 by default) and hands every accepted connection to
`on_conn(conn)` in a thread of its own; with no `on_conn` a connection is only held open (a server that accepts
and never sends a byte). `port`, `url` (http://addr:port), `close()` (the listening socket and every connection).
`silent_endpoint()` is that silent server as a context manager yielding its URL.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Listener:
    """See the module docstring."""

    def __init__(self, on_conn: Callable[[socket.socket], None] | None = None, addr: str = "127.0.0.1",
                 family: socket.AddressFamily = socket.AF_INET, backlog: int = 64):
        self.on_conn = on_conn
        self.conns: list[socket.socket] = []
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{addr}:{self.port}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.on_conn is not None:
                threading.Thread(target=self.on_conn, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """http://127.0.0.1:<port> that accepts connections and never sends a byte."""
    server = Listener()
    try:
        yield server.url
    finally:
        server.close()

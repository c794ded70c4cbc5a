"""HTTP calls with a total deadline: connect, headers and body of a call end within its bound, whatever the
server sends (one byte a second included).

requests and urllib3 bound each socket operation, never a whole call: urllib3 2.x's `Timeout(total=...)`
caps the connect and the wait for the status line, and every later read gets the read timeout afresh (its
own docs: "the read and total timeouts only measure the time between read operations on the socket"). So a
call runs under a `Deadline`: every connection of a deadline session (`new_session()`) registers with the calling
thread's open deadlines when it connects or sends a request, and one watchdog thread shuts the socket down
when a deadline passes; the blocked read returns at once and the call raises `TotalTimeout`.

Contract:
- `new_session(http_conn, https_conn)`: a `requests.Session` whose connections honour deadlines (subclasses of
  `DeadlineHTTPConnection` / `DeadlineHTTPSConnection` may be given, e.g. to stamp send times). It ignores
  proxy settings from the environment (a proxy's connections could not be cut).
- `with deadline(total_s, what) as d:` every call this thread makes through a deadline session inside the
  block ends by `total_s` after entry: a call still running then raises `TotalTimeout` (a
  `requests.Timeout`, one line naming `what` and the bound), also when the cut made the body look complete.
  `d.left()` is the time left, `d.check()` raises when it has passed. Nested blocks: the tighter one wins.
- `request(method, url, total_s=…, session=None, **kw)`: one call with its body read in full, within total_s.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

CONNECT_TIMEOUT_S = 5.0


class TotalTimeout(requests.Timeout):
    """A call did not complete (connect, headers and body) within its total deadline."""


class Deadline:
    """One block's bound: the connections used in it, cut when the bound passes (see module doc)."""

    def __init__(self, total_s: float, what: str):
        self.total_s, self.what = float(total_s), what
        self.at = time.monotonic() + self.total_s
        self.expired = self.finished = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def left(self) -> float:
        """Seconds until the deadline (0 once passed)."""
        return max(0.0, self.at - time.monotonic())

    def error(self) -> TotalTimeout:
        return TotalTimeout(f"{self.what}: no complete answer within {self.total_s:g}s (the call's total bound: "
                            "connect, headers and body); check that server's load and the network path to it")

    def check(self) -> None:
        """Raise TotalTimeout when the deadline has passed."""
        if self.expired or time.monotonic() >= self.at:
            raise self.error()

    def attach(self, conn: Any) -> None:
        """Cut `conn`'s socket when this deadline passes (at once when it already has). The socket itself is
        kept: http.client drops `conn.sock` when the response reads to the connection's close."""
        sock = getattr(conn, "sock", None)
        if sock is None:
            return
        with self._lock:
            if self.finished:
                return
            if all(s is not sock for s in self._socks):
                self._socks.append(sock)
            if self.expired:
                _cut(sock)

    def expire(self) -> None:
        """The watchdog's call: mark expired and cut every socket of a block still open."""
        with self._lock:
            if self.finished:
                return
            self.expired = True
            for sock in self._socks:
                _cut(sock)

    def finish(self) -> None:
        """The block ended: its connections are no longer ours to cut."""
        with self._lock:
            self.finished = True
            self._socks.clear()


def _cut(sock: socket.socket) -> None:
    """Shut a socket down (a read blocked on it returns at once); the pool drops its connection later."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under TLS
    except OSError:
        pass


class _Watchdog:
    """One daemon thread that expires deadlines in time order."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, d: Deadline) -> None:
        with self._cv:
            heapq.heappush(self._heap, (d.at, next(self._seq), d))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-deadline-watchdog", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    while self._heap and self._heap[0][2].finished:
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        due = heapq.heappop(self._heap)[2]
                        break
                    self._cv.wait(self._heap[0][0] - now if self._heap else None)
            due.expire()


_WATCHDOG = _Watchdog()
_open = threading.local()


def _open_deadlines() -> list[Deadline]:
    stack = getattr(_open, "stack", None)
    if stack is None:
        stack = _open.stack = []
    return stack


@contextmanager
def deadline(total_s: float, what: str) -> Iterator[Deadline]:
    """Bound every deadline-session call of this thread inside the block by `total_s` (see module doc)."""
    d = Deadline(total_s, what)
    stack = _open_deadlines()
    stack.append(d)
    _WATCHDOG.add(d)
    try:
        yield d
        if d.expired:  # the cut may end a body without a length as if it were complete
            raise d.error()
    except Exception as exc:  # requests', urllib3's (raw from a streamed read) and http.client's errors
        if d.expired and not isinstance(exc, TotalTimeout):
            raise d.error() from None
        raise
    finally:
        d.finish()
        stack.remove(d)


class _Attach:
    """Connection mixin: register with the thread's open deadlines on connect and on every request."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]  # a fresh connection: its socket exists from here
        for d in _open_deadlines():
            d.attach(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        for d in _open_deadlines():
            d.attach(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class DeadlineHTTPConnection(_Attach, HTTPConnection):
    """An urllib3 HTTP connection that deadlines can cut."""


class DeadlineHTTPSConnection(_Attach, HTTPSConnection):
    """An urllib3 HTTPS connection that deadlines can cut."""


def new_session(http_conn: type[HTTPConnection] = DeadlineHTTPConnection,
            https_conn: type[HTTPSConnection] = DeadlineHTTPSConnection, pool_maxsize: int = 10) -> requests.Session:
    """A Session whose connections honour `deadline` blocks; environment proxies are not used."""
    if not (issubclass(http_conn, _Attach) and issubclass(https_conn, _Attach)):
        raise TypeError("new_session(): connection classes must derive from DeadlineHTTP(S)Connection")
    s = requests.Session()
    s.trust_env = False
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize)
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": type("DeadlineHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("DeadlineHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})}
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


def request(method: str, url: str, *, total_s: float, session: requests.Session | None = None,
            connect_s: float = CONNECT_TIMEOUT_S, **kw: Any) -> requests.Response:
    """One call, its body read in full, within `total_s` (TotalTimeout otherwise); other errors as requests'.
    `session` must come from `new_session` (a one-off one is made and closed when None)."""
    own = session is None
    s = new_session() if session is None else session
    try:
        with deadline(total_s, f"{method} {url}"):
            return s.request(method, url, timeout=(min(connect_s, total_s), total_s), **kw)
    finally:
        if own:
            s.close()

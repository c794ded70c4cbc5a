"""The MLX ring handshake over real TCP sockets.

Contract: ``ring_connect`` binds a listener on ``bind_addr:P`` (the own ``0.0.0.0:P`` slot),
ranks < n-1 accept first then connect right, rank n-1 connects first then accepts; connects
retry 5 times sleeping ``retry_s`` (default 1,2,4,8,16 s) and then raise
``RuntimeError("[ring] Couldn't connect (error: N)")`` with the **macOS** errno. The listener
is closed once both sockets exist; the returned sockets stay ESTABLISHED.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable, Sequence

LINUX_TO_MAC = {errno.ECONNREFUSED: 61, errno.ETIMEDOUT: 60, errno.EHOSTUNREACH: 65, errno.EHOSTDOWN: 64,
                errno.ENETUNREACH: 51, errno.EADDRNOTAVAIL: 49, errno.EADDRINUSE: 48, errno.ECONNRESET: 54}


def mac_errno(err: int | None) -> int:
    return LINUX_TO_MAC.get(err or 0, err or 0)


def parse_host(entry: str) -> tuple[str, int]:
    ip, port = entry.rsplit(":", 1)
    return ip, int(port)


def _listen(bind_addr: str, port: int) -> socket.socket:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        srv.bind((bind_addr, port))
    except OSError as exc:
        srv.close()
        raise RuntimeError(f"[ring] Couldn't bind socket (error: {mac_errno(exc.errno)})") from None
    srv.listen(1)
    return srv


def _connect(host: tuple[str, int], bind_addr: str, retry_s: Sequence[float], timeout: float,
             fault_errno: int | None, debug: Callable[[str], None]) -> socket.socket:
    last = 0
    for attempt, delay in enumerate(retry_s, 1):
        if fault_errno is not None:
            if fault_errno == 60:
                time.sleep(timeout)
            last = fault_errno
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.bind((bind_addr, 0))
                sock.connect(host)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                debug(f"[ring] connected to {host[0]}:{host[1]} from {sock.getsockname()} (attempt {attempt})")
                return sock
            except TimeoutError:
                last = 60
            except OSError as exc:
                last = mac_errno(exc.errno)
            sock.close()
        debug(f"[ring] connect to {host[0]}:{host[1]} attempt {attempt} failed (error: {last}); sleeping {delay}s")
        time.sleep(delay)
    raise RuntimeError(f"[ring] Couldn't connect (error: {last})")


def ring_connect(hosts: list[str], rank: int, bind_addr: str, retry_s: Sequence[float], timeout: float,
                 fault_errno: int | None = None,
                 debug: Callable[[str], None] = lambda _m: None) -> list[socket.socket]:
    """Run the handshake; returns [accepted-from-left, connected-to-right]."""
    n = len(hosts)
    own_port = parse_host(hosts[rank])[1]
    right = parse_host(hosts[(rank + 1) % n])
    srv = _listen(bind_addr, own_port)
    debug(f"[ring] rank {rank} listening on {bind_addr}:{own_port}")
    try:
        if rank < n - 1:
            left_sock, peer = srv.accept()
            debug(f"[ring] rank {rank} accepted {peer}")
            right_sock = _connect(right, bind_addr, retry_s, timeout, fault_errno, debug)
        else:
            right_sock = _connect(right, bind_addr, retry_s, timeout, fault_errno, debug)
            left_sock, peer = srv.accept()
            debug(f"[ring] rank {rank} accepted {peer}")
    finally:
        srv.close()
    return [left_sock, right_sock]

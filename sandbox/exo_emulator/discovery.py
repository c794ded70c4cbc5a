"""Peer discovery over UDP hellos to ``peer_addresses`` (stands in for zenoh multicast / mDNS).

Contract: every ``hello_s`` a hello is sent to each peer address on the discovery port(s); hellos
carry a hash of the namespace (NEW: ``--namespace``; OLD: the libp2p PSK material from
``EXO_LIBP2P_NAMESPACE``, default ``v0.0.1``) and the generation, so nodes of another namespace or
generation are dropped silently. ``on_hello(info)`` is called for every accepted hello.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .logs import logger


def namespace_hash(generation: str, namespace: str) -> str:
    """NEW: 8-byte digest of the namespace; OLD: the pnet PSK sha3("exo_discovery_network"+ns)."""
    if generation == "new":
        return hashlib.blake2b(namespace.encode(), digest_size=8).hexdigest()
    return hashlib.sha3_256(("exo_discovery_network" + namespace).encode()).hexdigest()


class Discovery:
    def __init__(self, bind_addr: str, ports: list[int], peers: list[str], ns_hash: str, generation: str,
                 interval: float, make_hello: Callable[[], dict[str, Any]],
                 on_hello: Callable[[dict[str, Any]], None]) -> None:
        """``ports``: the first one that binds is used; hellos go to every one of them (OLD's mDNS
        port 5353 needs root, so unprivileged node users fall back to the second)."""
        self.bind_addr, self.ports, self.peers = bind_addr, ports, [p for p in peers if p != bind_addr]
        self.ns_hash, self.generation, self.interval = ns_hash, generation, interval
        self.make_hello, self.on_hello = make_hello, on_hello
        self.sock = self._bind(bind_addr, ports)
        self.stopped = threading.Event()

    @staticmethod
    def _bind(addr: str, ports: list[int]) -> socket.socket:
        last: OSError | None = None
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((addr, port))
                return sock
            except PermissionError as exc:
                sock.close()
                last = exc
                continue
            except OSError:
                sock.close()
                raise
        assert last is not None
        raise last

    def start(self) -> None:
        threading.Thread(target=self._send_loop, name="discovery-send", daemon=True).start()
        threading.Thread(target=self._recv_loop, name="discovery-recv", daemon=True).start()

    def _send_loop(self) -> None:
        while not self.stopped.is_set():
            hello = dict(self.make_hello(), magic="EXO", ns=self.ns_hash, gen=self.generation)
            data = json.dumps(hello).encode()
            for peer in self.peers:
                for port in self.ports:
                    try:
                        self.sock.sendto(data, (peer, port))
                    except OSError as exc:
                        logger.debug(f"discovery error {exc}", "exo.networking:discovery:1")
            self.stopped.wait(self.interval)

    def _recv_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                data, src = self.sock.recvfrom(65536)
                hello = json.loads(data)
            except (OSError, ValueError):
                continue
            if hello.get("magic") != "EXO" or hello.get("gen") != self.generation:
                continue
            if hello.get("ns") != self.ns_hash:
                continue  # dropped: different namespace (trace level in exo)
            hello["src"] = src[0]
            hello["heard"] = time.monotonic()
            self.on_hello(hello)

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.sock.close()
        except OSError:
            pass

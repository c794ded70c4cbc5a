"""Our pure-Python stand-in for EXO v1.0.71's Rust extension `exo_pyo3_bindings` (libp2p generation).

Contract: the names v1.0.71 imports (rust/exo_pyo3_bindings/exo_pyo3_bindings.pyi): `Keypair`
(random Ed25519-sized secret; `to_node_id()` a `12D3KooW…` peer-id-shaped string),
`NetworkingHandle(identity, bootstrap_peers, listen_port)` with `recv()` /
`gossipsub_subscribe/unsubscribe/publish`, `PyFromSwarm.Connection(peer_id, connected)` /
`PyFromSwarm.Message(origin, topic, data)` with `__match_args__`, and the three exceptions.
Carried by `modeldrop_mesh.Mesh`: the namespace is `EXO_LIBP2P_NAMESPACE` (mDNS discovery port
5353); a connection event per peer, none at start; publishing to a topic no peer subscribes to
raises `NoPeersSubscribedToTopicError`, as gossipsub does.
"""

from __future__ import annotations

import hashlib
import os

from modeldrop_mesh import Mesh

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
DISCOVERY_PORT = 5353


class AllQueuesFullError(Exception):
    pass


class MessageTooLargeError(Exception):
    pass


class NoPeersSubscribedToTopicError(Exception):
    pass


def _b58(data: bytes) -> str:
    n, out = int.from_bytes(data, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return out


class Keypair:
    """A node identity: 32 secret bytes."""

    def __init__(self, secret: bytes) -> None:
        self._secret = bytes(secret)

    @staticmethod
    def generate() -> Keypair:
        return Keypair(os.urandom(32))

    @staticmethod
    def from_bytes(bytes: bytes) -> Keypair:  # noqa: A002 - the extension's name
        if len(bytes) < 32:
            raise ValueError("invalid keypair bytes")
        return Keypair(bytes[-32:])

    def to_bytes(self) -> bytes:
        return self._secret

    def to_node_id(self) -> str:
        return "12D3KooW" + _b58(hashlib.sha256(self._secret).digest())[:44]


class PyFromSwarm:
    """What the swarm hands EXO: a connection change or a message."""


class _Connection(PyFromSwarm):
    __match_args__ = ("peer_id", "connected")

    def __init__(self, peer_id: str, connected: bool) -> None:
        self._peer_id, self._connected = peer_id, bool(connected)

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def connected(self) -> bool:
        return self._connected

    def __repr__(self) -> str:
        return f"PyFromSwarm.Connection(peer_id={self._peer_id!r}, connected={self._connected})"


class _Message(PyFromSwarm):
    __match_args__ = ("origin", "topic", "data")

    def __init__(self, origin: str, topic: str, data: bytes) -> None:
        self._origin, self._topic, self._data = origin, topic, bytes(data)

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def data(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return f"PyFromSwarm.Message(origin={self._origin!r}, topic={self._topic!r}, data=<{len(self._data)} bytes>)"


_Connection.__name__, _Connection.__qualname__ = "Connection", "PyFromSwarm.Connection"
_Message.__name__, _Message.__qualname__ = "Message", "PyFromSwarm.Message"
PyFromSwarm.Connection = _Connection  # type: ignore[attr-defined]
PyFromSwarm.Message = _Message  # type: ignore[attr-defined]


class NetworkingHandle:
    """The node's handle on the swarm; nothing is bound until first used."""

    def __init__(self, identity: Keypair, bootstrap_peers: list[str], listen_port: int) -> None:
        namespace = os.environ.get("EXO_LIBP2P_NAMESPACE") or "v0.0.1"
        self._mesh = Mesh(identity.to_node_id(), namespace, listen_port, DISCOVERY_PORT, start_event=False)

    async def recv(self) -> PyFromSwarm:
        event = await self._mesh.next_event()
        if event[0] == "conn":
            return PyFromSwarm.Connection(event[1], event[2])  # type: ignore[attr-defined]
        return PyFromSwarm.Message(event[1], event[2], event[3])  # type: ignore[attr-defined]

    async def gossipsub_subscribe(self, topic: str) -> bool:
        return self._mesh.subscribe(topic)

    async def gossipsub_unsubscribe(self, topic: str) -> bool:
        return self._mesh.unsubscribe(topic)

    async def gossipsub_publish(self, topic: str, data: bytes) -> None:
        if self._mesh.publish(topic, data) == 0:
            raise NoPeersSubscribedToTopicError(topic)

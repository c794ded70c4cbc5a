"""Our pure-Python stand-in for EXO HEAD's Rust extension `exo_rs` (interface: rust/exo_rs/exo_rs.pyi).

Contract: the names EXO imports (`FromSwarm.Connection/Message` with `__match_args__`,
`NetworkingHandle.new/recv/gossipsub_*`, `Pidfile`, `PidfileError`) with zenoh's observable
semantics, carried by `modeldrop_mesh.Mesh` (discovery within a namespace, pub/sub to other
nodes only, connection events, lazy start). Not EXO's code: the sandbox's transport.
"""

from __future__ import annotations

import fcntl
import os

from modeldrop_mesh import Mesh

__all__ = ["FromSwarm", "NetworkingHandle", "Pidfile", "PidfileError"]


class FromSwarm:
    """What the swarm hands EXO: a connection change or a message."""


class _Connection(FromSwarm):
    __match_args__ = ("connected",)

    def __init__(self, connected: bool) -> None:
        self._connected = bool(connected)

    @property
    def connected(self) -> bool:
        return self._connected

    def __repr__(self) -> str:
        return f"FromSwarm.Connection(connected={self._connected})"


class _Message(FromSwarm):
    __match_args__ = ("topic", "data")

    def __init__(self, topic: str, data: bytes) -> None:
        self._topic, self._data = topic, bytes(data)

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def data(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return f"FromSwarm.Message(topic={self._topic!r}, data=<{len(self._data)} bytes>)"


_Connection.__name__, _Connection.__qualname__ = "Connection", "FromSwarm.Connection"
_Message.__name__, _Message.__qualname__ = "Message", "FromSwarm.Message"
FromSwarm.Connection = _Connection  # type: ignore[attr-defined]
FromSwarm.Message = _Message  # type: ignore[attr-defined]


class NetworkingHandle:
    """The node's handle on the swarm; nothing is bound until first used."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    @staticmethod
    def new(identity: str, namespace: str, listen_port: int, discovery_service_port: int) -> NetworkingHandle:
        return NetworkingHandle(Mesh(identity, namespace, listen_port, discovery_service_port))

    async def recv(self) -> FromSwarm:
        event = await self._mesh.next_event()
        if event[0] == "conn":
            return FromSwarm.Connection(event[2])
        return FromSwarm.Message(event[2], event[3])

    async def gossipsub_subscribe(self, topic: str) -> bool:
        return self._mesh.subscribe(topic)

    async def gossipsub_unsubscribe(self, topic: str) -> bool:
        return self._mesh.unsubscribe(topic)

    async def gossipsub_publish(self, topic: str, data: bytes) -> None:
        self._mesh.publish(topic, data)


class PidfileError(Exception):
    """The PID file is locked by a running EXO."""

    def __repr__(self) -> str:
        return f'PidfileError("{self.args[0]}")'

    def __str__(self) -> str:
        return repr(self)


class Pidfile:
    """A PID file held with flock; deleted on close (like libbsd's pidfile)."""

    def __init__(self, path: str | os.PathLike[str], mode: int) -> None:
        self._path = os.fspath(path)
        os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise PidfileError(f"daemon already running with PID {other}" if other else
                               "daemon already running with unknown PID") from None
        self._fd: int | None = fd

    def write(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def as_raw_fd(self) -> int:
        assert self._fd is not None
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self._path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

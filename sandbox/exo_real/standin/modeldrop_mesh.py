"""The transport shared by our stand-ins for EXO's Rust extensions (`exo_rs`, `exo_pyo3_bindings`).

Contract: `Mesh(identity, namespace, listen_port, discovery_port)` is a gossip transport between
EXO processes of one sandbox, started lazily on first use (EXO creates its handle in one event
loop and uses it in another, so no asyncio object is made before then):
- discovery: every `HELLO_S` a UDP hello (namespace digest, identity, TCP port) goes from the
  node's own address (`MODELDROP_EXO_NODE_ADDRESS`) to every address in
  `MODELDROP_EXO_PEER_ADDRESSES` but those in `MODELDROP_EXO_UNREACHABLE` (the sandbox's cabling: a
  ring leaves out the non-neighbours) on the same discovery port; hellos of another namespace are
  dropped, so a namespace mismatch isolates the node. The lower identity dials.
- links: TCP, length-prefixed frames, to the nodes discovered (direct peers); a peer silent for
  `PEER_TIMEOUT_S` or whose link closes is gone. `next_event()` gives ("conn", peer, bool) per direct
  peer that comes or goes (plus one ("conn", "", True) at start when `start_event`) and ("msg", origin,
  topic, data) per message, `origin` the node that published it.
- routing (as gossipsub and zenoh's peers forward): a message and each node's subscriptions are flooded
  over the links, each message once per node (its id), so on a ring a node reaches the ones it has no
  link to through its neighbours. A frame carries the nodes already sent it, so a full mesh forwards
  nothing. A node's subscriptions are re-announced every `HELLO_S` and forgotten after `PEER_TIMEOUT_S`.
- pub/sub: a message goes to the other nodes subscribed to its topic, never back to its sender;
  a topic no node subscribes to is dropped silently (`publish` returns how many nodes subscribe).
- fault switch: `MODELDROP_EXO_FAULT_NAMESPACE` replaces the namespace EXO passed (mismatch injection).
Standard library only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import struct
import threading
import time
import uuid
from collections import OrderedDict, deque
from typing import Any

HELLO_S = 0.5
PEER_TIMEOUT_S = 6.0
_LEN = struct.Struct("!I")
SEEN_MAX = 4096  # message ids remembered (a flood brings each message at most once per link)


def _digest(namespace: str) -> str:
    return hashlib.blake2b(namespace.encode(), digest_size=8).hexdigest()


class Inbox:
    """A queue filled by threads and awaited from whichever asyncio loop asks (one waiter at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[Any] = deque()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]] | None = None

    def put(self, item: Any) -> None:
        with self._lock:
            waiter, self._waiter = self._waiter, None
            if waiter is None or waiter[1].done():
                self._items.append(item)
                return
        waiter[0].call_soon_threadsafe(self._deliver, waiter[1], item)

    def _deliver(self, fut: asyncio.Future[Any], item: Any) -> None:
        if fut.done():  # cancelled meanwhile: keep the item for the next get()
            with self._lock:
                self._items.appendleft(item)
        else:
            fut.set_result(item)

    async def get(self) -> Any:
        with self._lock:
            if self._items:
                return self._items.popleft()
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[Any] = loop.create_future()
            self._waiter = (loop, fut)
        return await fut


class _Peer:
    """One TCP link to another node."""

    def __init__(self, ident: str, sock: socket.socket) -> None:
        self.ident, self.sock = ident, sock
        self.send_lock = threading.Lock()
        self.last_seen = time.monotonic()

    def send(self, kind: bytes, payload: bytes) -> bool:
        frame = _LEN.pack(len(payload) + 1) + kind + payload
        try:
            with self.send_lock:
                self.sock.sendall(frame)
            return True
        except OSError:
            return False


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    body = _recv_exact(sock, _LEN.unpack(head)[0])
    return (body[:1], body[1:]) if body else None


class Mesh:
    """See the module docstring."""

    def __init__(self, identity: str, namespace: str, listen_port: int, discovery_port: int,
                 start_event: bool = True) -> None:
        self.identity = identity
        # fault switch of the sandbox (a namespace mismatch): EXO logs and passes its own namespace
        self.namespace = os.environ.get("MODELDROP_EXO_FAULT_NAMESPACE") or namespace
        self.listen_port, self.discovery_port = listen_port, discovery_port
        self.address = os.environ.get("MODELDROP_EXO_NODE_ADDRESS", "127.0.0.1")
        unreachable = set(os.environ.get("MODELDROP_EXO_UNREACHABLE", "").split(","))
        self.peer_addresses = [a for a in os.environ.get("MODELDROP_EXO_PEER_ADDRESSES", "").split(",")
                               if a and a not in unreachable]
        self.inbox = Inbox()
        self.topics: set[str] = set()
        self.peers: dict[str, _Peer] = {}
        self.subs: dict[str, tuple[str, int, frozenset[str], float]] = {}  # origin -> (boot, seq, topics, heard)
        self._boot, self._seq = uuid.uuid4().hex, 0
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self.hello_seen: dict[str, float] = {}
        self._dialing: set[str] = set()
        self._start_event = start_event
        self._lock = threading.RLock()
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the link and discovery sockets and start the threads (once)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._tcp = socket.create_server((self.address, self.listen_port), reuse_port=False)
        self.listen_port = self._tcp.getsockname()[1]
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((self.address, self.discovery_port))
        for target in (self._accept_loop, self._hello_loop, self._discovery_loop):
            threading.Thread(target=target, daemon=True, name=f"mesh-{target.__name__}").start()
        if self._start_event:
            self.inbox.put(("conn", "", True))

    # -- discovery --------------------------------------------------------------------------------
    def _hello(self) -> bytes:
        return json.dumps({"ns": _digest(self.namespace), "id": self.identity, "port": self.listen_port}).encode()

    def _hello_loop(self) -> None:
        while True:
            for addr in self.peer_addresses:
                if addr != self.address:
                    try:
                        self._udp.sendto(self._hello(), (addr, self.discovery_port))
                    except OSError:
                        pass
            self._expire_silent_peers()
            self._announce()
            time.sleep(HELLO_S)

    def _discovery_loop(self) -> None:
        while True:
            data, (addr, _port) = self._udp.recvfrom(65536)
            try:
                hello = json.loads(data)
            except ValueError:
                continue
            if hello.get("ns") != _digest(self.namespace) or hello.get("id") == self.identity:
                continue
            ident = str(hello["id"])
            with self._lock:
                self.hello_seen[ident] = time.monotonic()
                known = ident in self.peers
            if not known and self.identity < ident and ident not in self._dialing:
                self._dialing.add(ident)
                threading.Thread(target=self._dial, args=(ident, addr, int(hello["port"])), daemon=True).start()

    def _expire_silent_peers(self) -> None:
        now = time.monotonic()
        with self._lock:
            silent = [p for i, p in self.peers.items() if now - self.hello_seen.get(i, now) > PEER_TIMEOUT_S]
        for peer in silent:
            self._drop(peer)

    # -- links ------------------------------------------------------------------------------------
    def _dial(self, ident: str, addr: str, port: int) -> None:
        """Connect to a peer and serve the link (in its own thread, until the link closes)."""
        try:
            sock = socket.create_connection((addr, port), timeout=2.0, source_address=(self.address, 0))
        except OSError:
            return
        finally:
            self._dialing.discard(ident)
        sock.settimeout(None)
        self._handshake(sock)

    def _accept_loop(self) -> None:
        while True:
            sock, _ = self._tcp.accept()
            threading.Thread(target=self._handshake, args=(sock,), daemon=True).start()

    def _handshake(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        me = json.dumps({"ns": _digest(self.namespace), "id": self.identity}).encode()
        sock.sendall(_LEN.pack(len(me) + 1) + b"H" + me)
        frame = _read_frame(sock)
        other = json.loads(frame[1]) if frame and frame[0] == b"H" else {}
        ident = str(other.get("id", ""))
        with self._lock:
            ok = other.get("ns") == _digest(self.namespace) and ident and ident not in self.peers
            if ok:
                peer = _Peer(ident, sock)
                self.peers[ident] = peer
                self.hello_seen[ident] = time.monotonic()
        if not ok:
            sock.close()
            return
        self._announce()
        self.inbox.put(("conn", ident, True))
        self._read_loop(peer)

    def _read_loop(self, peer: _Peer) -> None:
        while (frame := _read_frame(peer.sock)) is not None:
            kind, payload = frame
            if kind == b"T":
                self._on_subs(peer, payload)
            elif kind == b"M":
                self._on_message(peer, payload)
        self._drop(peer)

    def _drop(self, peer: _Peer) -> None:
        with self._lock:
            if self.peers.get(peer.ident) is not peer:
                return
            del self.peers[peer.ident]
        try:
            peer.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        peer.sock.close()
        self.inbox.put(("conn", peer.ident, False))

    # -- routing ----------------------------------------------------------------------------------
    def _flood(self, kind: bytes, head: dict[str, Any], body: bytes, skip: str | None = None) -> int:
        """Send a frame (JSON head, body) to every direct peer not in head["via"] (nor `skip`); adds them to it."""
        with self._lock:
            peers = [p for i, p in self.peers.items() if i != skip and i not in head["via"]]
        head = dict(head, via=sorted({*head["via"], self.identity, *(p.ident for p in peers)}))
        raw = json.dumps(head).encode()
        frame = _LEN.pack(len(raw)) + raw + body
        sent = 0
        for p in peers:
            if p.send(kind, frame):
                sent += 1
            else:
                self._drop(p)
        return sent

    def _fresh(self, msg_id: bytes) -> bool:
        with self._lock:
            if msg_id in self._seen:
                return False
            self._seen[msg_id] = None
            while len(self._seen) > SEEN_MAX:
                self._seen.popitem(last=False)
            return True

    def _announce(self) -> None:
        """Flood this node's subscriptions (a fresh sequence number each time)."""
        with self._lock:
            self._seq += 1
            head = {"o": self.identity, "boot": self._boot, "seq": self._seq, "topics": sorted(self.topics),
                    "via": []}
        self._flood(b"T", head, b"")

    def _on_subs(self, peer: _Peer, payload: bytes) -> None:
        n = _LEN.unpack(payload[:4])[0]
        head = json.loads(payload[4:4 + n])
        origin = str(head["o"])
        with self._lock:
            boot, seq = self.subs.get(origin, ("", -1, frozenset(), 0.0))[:2]
            if origin == self.identity or (head["boot"] == boot and head["seq"] <= seq):
                return  # our own, or already had it (an announcement reaches a node once per link)
            self.subs[origin] = (str(head["boot"]), int(head["seq"]), frozenset(head["topics"]), time.monotonic())
        self._flood(b"T", head, b"", skip=peer.ident)

    def subscribers(self, topic: str) -> list[str]:
        """The other nodes subscribed to `topic`, as last announced within `PEER_TIMEOUT_S`."""
        horizon = time.monotonic() - PEER_TIMEOUT_S
        with self._lock:
            return [o for o, (_, _, topics, heard) in self.subs.items() if topic in topics and heard >= horizon]

    def _on_message(self, peer: _Peer, payload: bytes) -> None:
        n = _LEN.unpack(payload[:4])[0]
        head = json.loads(payload[4:4 + n])
        if not self._fresh(bytes.fromhex(head["id"])):
            return
        data = payload[4 + n:]
        if head["o"] != self.identity and head["t"] in self.topics:
            self.inbox.put(("msg", head["o"], head["t"], data))
        self._flood(b"M", head, data, skip=peer.ident)

    # -- pub/sub ----------------------------------------------------------------------------------
    def subscribe(self, topic: str) -> bool:
        self.start()
        with self._lock:
            if topic in self.topics:
                return False
            self.topics.add(topic)
        self._announce()
        return True

    def unsubscribe(self, topic: str) -> bool:
        self.start()
        with self._lock:
            if topic not in self.topics:
                return False
            self.topics.discard(topic)
        self._announce()
        return True

    def publish(self, topic: str, data: bytes) -> int:
        """To every other node subscribed to `topic` (nobody subscribed: dropped); returns how many subscribe."""
        self.start()
        subscribed = len(self.subscribers(topic))
        if subscribed:
            msg_id = uuid.uuid4().bytes
            self._fresh(msg_id)
            self._flood(b"M", {"id": msg_id.hex(), "o": self.identity, "t": topic, "via": []}, bytes(data))
        return subscribed

    async def next_event(self) -> tuple[Any, ...]:
        self.start()
        return await self.inbox.get()

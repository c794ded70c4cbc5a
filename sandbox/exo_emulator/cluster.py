"""Cluster membership, master election and state replication over the emulator's link.

Contract:
- Discovery hellos (``discovery.py``) feed ``peers``; a 3 s campaign elects the master by
  (seniority: 1_000_000 with ``-m``, current master, oldest start, id). Exactly one master per
  namespace; a joining node follows an existing master unless it outranks it (``-m``).
- The master keeps the event log; followers connect to the master's link port (NEW: the zenoh
  port, OLD: the libp2p port), receive every event from index 0 and apply it, so their /state
  mirrors the master's. Local events and commands from followers go upstream on that link.
- A master change resets this node's state to empty and calls the ``on_master_change`` hooks
  (the worker kills its runners, the API unpauses) — /state is briefly empty, as in exo.
- The master removes a node silent for ``node_timeout_s`` (``Manually removing node <id> due to
  inactivity``) and every ``master_plan_s`` deletes instances that reference a missing node.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .logs import logger
from .master import MasterRole
from .state import State
from .wire import JsonConn

W_MAIN = "exo.main:_elect_loop:210"


class Cluster:
    def __init__(self, node_id: str, address: str, link_port: int, api_port: int | None, generation: str,
                 force_master: bool, timing: Any, isolated: bool) -> None:
        self.node_id, self.address, self.generation = node_id, address, generation
        self.link_port, self.api_port, self.timing, self.isolated = link_port, api_port, timing, isolated
        self.seniority = 1_000_000 if force_master else 0
        self.started = time.time()
        self.state = State()
        self.cond = threading.Condition()
        self.master_id: str | None = None
        self.session = 0
        self.applied: list[dict[str, Any]] = []
        self.upstream: JsonConn | None = None
        self.pending: list[dict[str, Any]] = []
        self.peers: dict[str, dict[str, Any]] = {}
        self.contact: dict[str, float] = {}
        self.master_since = time.monotonic()
        self.on_master_change: list[Callable[[], None]] = []
        self.chat_handler: Callable[[dict[str, Any], JsonConn], None] | None = None
        self.stopped = threading.Event()
        self.master = MasterRole(self)
        self.server = self._bind_link()

    # ---- link server -----------------------------------------------------------------------------
    def _bind_link(self) -> socket.socket:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.address, self.link_port))
        srv.listen(64)
        self.link_port = srv.getsockname()[1]
        return srv

    def start(self) -> None:
        threading.Thread(target=self._accept_loop, name="link-accept", daemon=True).start()
        threading.Thread(target=self._campaign, name="campaign", daemon=True).start()
        threading.Thread(target=self.master.run, name="master-loop", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_conn, args=(JsonConn(sock),), daemon=True).start()

    def _serve_conn(self, conn: JsonConn) -> None:
        first = conn.recv()
        if first is None:
            conn.close()
            return
        if first.get("type") == "chat" and self.chat_handler is not None:
            try:
                self.chat_handler(first, conn)
            finally:
                conn.close()
            return
        if first.get("type") == "follow" and not self.isolated:
            self.master.serve_follower(conn, first)
            return
        conn.close()

    # ---- discovery input -------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        return {"zid": self.node_id, "link_port": self.link_port, "api_port": self.api_port,
                "addr": self.address, "seniority": self.seniority, "master": self.master_id,
                "started": self.started}

    def on_hello(self, h: dict[str, Any]) -> None:
        if self.isolated or h.get("zid") == self.node_id:
            return
        with self.cond:
            self.peers[h["zid"]] = h
            self.contact[h["zid"]] = time.monotonic()
            mine = self.master_id
        if h.get("master") == h["zid"] and mine is not None and h["zid"] != mine:
            if self._key(h) > self._key(self._info(mine)):
                self._set_master(h["zid"])

    def _info(self, nid: str) -> dict[str, Any]:
        return self.hello() if nid == self.node_id else self.peers.get(nid, {"zid": nid, "seniority": -1,
                                                                            "master": None, "started": 0})

    @staticmethod
    def _key(h: dict[str, Any]) -> tuple:
        return (h.get("seniority", 0), 1 if h.get("master") == h.get("zid") else 0,
                -float(h.get("started", 0)), h.get("zid", ""))

    def live_peers(self) -> list[dict[str, Any]]:
        horizon = time.monotonic() - max(3 * self.timing.hello_s + 1.0, 2.0)
        with self.cond:
            return [p for nid, p in self.peers.items() if self.contact.get(nid, 0) >= horizon]

    # ---- election --------------------------------------------------------------------------------
    def _campaign(self) -> None:
        self.stopped.wait(self.timing.election_s)
        if self.stopped.is_set():
            return
        candidates = [self.hello(), *self.live_peers()]
        best = max(candidates, key=self._key)
        self._set_master(best["zid"])

    def _set_master(self, mid: str) -> None:
        with self.cond:
            old = self.master_id
            if mid == old:
                return
            was_master = old == self.node_id
            self.master_id = mid
            self.session += 1
            session = self.session
            self.state.reset()
            followers = self.master.reset()
            self.applied = []
            self.pending = []
            upstream, self.upstream = self.upstream, None
            self.master_since = time.monotonic()
            self.cond.notify_all()
        for c in followers:
            c.close()
        if upstream is not None:
            upstream.close()
        if mid == self.node_id:
            logger.info("Node elected Master - promoting self", W_MAIN)
        elif was_master:
            logger.info(f"Node {mid} elected master - demoting self", W_MAIN)
        else:
            logger.info(f"Node {mid} elected master", W_MAIN)
        for hook in self.on_master_change:
            hook()
        if mid != self.node_id:
            threading.Thread(target=self._follow, args=(session, mid), name="follow", daemon=True).start()

    @property
    def is_master(self) -> bool:
        return self.master_id == self.node_id

    # ---- follower side ---------------------------------------------------------------------------
    def _follow(self, session: int, mid: str) -> None:
        failures_since = time.monotonic()
        while session == self.session and not self.stopped.is_set():
            peer = self.peers.get(mid)
            conn = None
            if peer is not None:
                try:
                    conn = JsonConn.connect(peer["src"], int(peer["link_port"]), timeout=3.0, source=self.address)
                except OSError:
                    conn = None
            if conn is None:
                if time.monotonic() - failures_since > max(3 * self.timing.hello_s + 1.0, 2.0) \
                        and mid not in {p["zid"] for p in self.live_peers()}:
                    self._master_lost(session)
                    return
                self.stopped.wait(0.3)
                continue
            self._run_upstream(session, conn)
            if session == self.session:
                self._master_lost(session)
            return

    def _run_upstream(self, session: int, conn: JsonConn) -> None:
        conn.send({"type": "follow", "zid": self.node_id, "from": 0})
        with self.cond:
            if session != self.session:
                conn.close()
                return
            self.upstream = conn
            pending, self.pending = self.pending, []
        for msg in pending:
            conn.send(msg)
        threading.Thread(target=self._heartbeat, args=(session, conn), daemon=True).start()
        while True:
            msg = conn.recv()
            if msg is None or session != self.session:
                break
            if msg.get("type") == "ev":
                with self.cond:
                    if session != self.session:
                        break
                    self.state.apply(msg["idx"], msg["event"])
                    self.applied.append(msg["event"])
                    self.cond.notify_all()
            elif msg.get("type") == "not_master":
                break
        conn.close()

    def _heartbeat(self, session: int, conn: JsonConn) -> None:
        """Heartbeats upstream; a master whose hellos stopped for ``node_timeout_s`` (e.g. a frozen
        process whose socket stays open) counts as lost: closing the link starts a new election."""
        while session == self.session and not conn.closed and not self.stopped.is_set():
            conn.send({"type": "hb", "zid": self.node_id})
            heard = self.contact.get(self.master_id or "", time.monotonic())
            if time.monotonic() - max(heard, self.master_since) > self.timing.node_timeout_s:
                conn.close()
                return
            self.stopped.wait(self.timing.info_s)

    def _master_lost(self, session: int) -> None:
        with self.cond:
            if session != self.session:
                return
            lost = self.master_id
            self.peers.pop(lost or "", None)
        logger.info(f"expired: Some(\"{lost}\")", "exo.networking:discovery:1")
        self._campaign_again(session)

    def _campaign_again(self, session: int) -> None:
        self.stopped.wait(self.timing.election_s)
        if session != self.session or self.stopped.is_set():
            return
        best = max([self.hello() | {"master": None}, *self.live_peers()], key=self._key)
        with self.cond:
            self.master_id = None if self.session == session else self.master_id
        self._set_master(best["zid"])

    # ---- publishing --------------------------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> None:
        """A local event (node info, runner status, download...) for the master's log."""
        self._upstream({"type": "event", "zid": self.node_id, "event": event})

    def command(self, cmd: dict[str, Any]) -> None:
        """A command for the master (CreateInstance, DeleteInstance, PlaceInstance)."""
        self._upstream({"type": "command", "zid": self.node_id, "command": cmd})

    def _upstream(self, msg: dict[str, Any]) -> None:
        with self.cond:
            if self.is_master:
                self.master.handle(msg)
                return
            conn = self.upstream
            if conn is None:
                self.pending.append(msg)
                return
        conn.send(msg)

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.server.close()
        except OSError:
            pass

"""The master's side of replication: its event log, its followers, the commands it runs, its periodic plan.

Contract: while this node is master, ``serve_follower`` sends a follower every event from the index it
asks for, then each new one, and takes its events and commands; ``append`` applies an event to the
replicated state and sends it to every follower; commands (CreateInstance, DeleteInstance,
AddCustomModelCard, PlaceInstance) become events, a failing one is logged as exo logs it; every
``info_s`` the master appends LastSeen, times out silent nodes and, every ``master_plan_s``, deletes
instances that reference a missing node. ``append``, ``handle`` and the plan steps run with the
cluster's ``cond`` held.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from .logs import logger
from .placement import place
from .state import utc_stamp
from .wire import JsonConn

W_MASTER = "exo.master.main:_plan:487"
W_CMD = "exo.master.main:_command_processor:468"


class MasterRole:
    """The master's log and followers; ``c`` is the node's ``Cluster`` (state, cond, contact, timing)."""

    def __init__(self, cluster: Any) -> None:
        self.c = cluster
        self.log: list[dict[str, Any]] = []
        self.followers: list[JsonConn] = []

    def reset(self) -> list[JsonConn]:
        """A new master session: an empty log; returns the followers to close (called with ``cond`` held)."""
        self.log = []
        followers, self.followers = self.followers, []
        return followers

    def serve_follower(self, conn: JsonConn, first: dict[str, Any]) -> None:
        with self.c.cond:
            if not self.c.is_master:
                conn.send({"type": "not_master"})
                conn.close()
                return
            for idx in range(int(first.get("from", 0)), len(self.log)):
                conn.send({"type": "ev", "idx": idx, "event": self.log[idx]})
            self.followers.append(conn)
            self.c.contact[first["zid"]] = time.monotonic()
        while True:
            msg = conn.recv()
            if msg is None:
                break
            with self.c.cond:
                if not self.c.is_master or conn not in self.followers:
                    break
                self.c.contact[msg.get("zid", "")] = time.monotonic()
                self.handle(msg)
        with self.c.cond:
            if conn in self.followers:
                self.followers.remove(conn)
        conn.close()

    def handle(self, msg: dict[str, Any]) -> None:
        """Master only, called with ``cond`` held."""
        if msg["type"] == "event":
            self.append(msg["event"])
        elif msg["type"] == "command":
            self._process_command(msg["command"])

    def append(self, event: dict[str, Any]) -> None:
        idx = len(self.log)
        self.log.append(event)
        self.c.applied.append(event)
        self.c.state.apply(idx, event)
        self.c.cond.notify_all()
        for c in list(self.followers):
            if not c.send({"type": "ev", "idx": idx, "event": event}):
                self.followers.remove(c)

    def _process_command(self, cmd: dict[str, Any]) -> None:
        try:
            kind = cmd["kind"]
            if kind == "CreateInstance":
                self.append({"type": "InstanceCreated", "instance": cmd["instance"]})
            elif kind == "DeleteInstance":
                if cmd["instanceId"] not in self.c.state.data["instances"]:
                    raise ValueError(f"Instance {cmd['instanceId']} not found")
                self.append({"type": "InstanceDeleted", "instanceId": cmd["instanceId"]})
            elif kind == "AddCustomModelCard":
                self.append({"type": "CustomCard", "card": cmd["card"]})
            elif kind == "PlaceInstance":
                inst = place(self.c.state.data, cmd["card"], cmd["sharding"], cmd["instanceMeta"],
                             int(cmd["minNodes"]), self.c.generation)
                self.append({"type": "InstanceCreated", "instance": inst})
        except Exception as exc:  # noqa: BLE001 - exo logs any command failure the same way
            tb = "".join(traceback.format_exception(exc)).rstrip()
            logger.warning(f"Error in command processor\n{tb}", W_CMD)

    def run(self) -> None:
        last_plan = time.monotonic()
        while not self.c.stopped.wait(self.c.timing.info_s):
            if not self.c.is_master:
                continue
            with self.c.cond:
                if not self.c.is_master:
                    continue
                self._refresh_last_seen()
                self._time_out_nodes()
                if time.monotonic() - last_plan >= self.c.timing.master_plan_s:
                    last_plan = time.monotonic()
                    self._delete_orphan_instances()

    def _refresh_last_seen(self) -> None:
        now_mono, now = time.monotonic(), time.time()
        times = {}
        for nid in self.c.state.data["topology"]["nodes"]:
            seen = now_mono if nid == self.c.node_id else self.c.contact.get(nid, self.c.master_since)
            stamp = now - (now_mono - seen)
            times[nid] = utc_stamp(stamp)
        if times:
            self.append({"type": "LastSeen", "times": times})

    def _time_out_nodes(self) -> None:
        now = time.monotonic()
        for nid in list(self.c.state.data["topology"]["nodes"]):
            if nid == self.c.node_id:
                continue
            seen = max(self.c.contact.get(nid, 0.0), self.c.master_since)
            if now - seen > self.c.timing.node_timeout_s:
                logger.info(f"Manually removing node {nid} due to inactivity", W_MASTER)
                self.append({"type": "NodeTimedOut", "nodeId": nid})

    def _delete_orphan_instances(self) -> None:
        nodes = set(self.c.state.data["topology"]["nodes"])
        for iid, body in self.c.state.instance_bodies().items():
            if not set(body["shardAssignments"]["nodeToRunner"]).issubset(nodes):
                self.append({"type": "InstanceDeleted", "instanceId": iid})

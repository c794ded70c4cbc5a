"""Topology edges from this node: ``GET http://<peer ip>:<own api port>/node_id`` on every peer interface.

Contract: every ``edge_probe_s`` each peer's IPv4 interfaces are probed from the node's own address; an
edge (snake_case ``sinkMultiaddr``) is created when the peer answers its own id and deleted when it no
longer does; a failed probe is silent, as in exo. An address in the config's ``unreachable`` (the
sandbox's cabling: a ring's non-neighbours) fails as a host with no route would, so no edge goes there.
The cluster link (election, state replication, chat forwarding) is not cabled: it stands in for EXO's
transport, which routes through neighbours.
"""

from __future__ import annotations

import copy
import http.client
import json
import threading
import time
from typing import Any

from .logs import logger


class EdgeProber:
    """The directed edges from one node (``node``: its config, cluster, id and API port)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.cfg, self.cluster, self.node_id = node.cfg, node.cluster, node.node_id

    def run(self, stopped: threading.Event) -> None:
        """Probe every ``edge_probe_s`` until ``stopped`` (a failed round is logged at debug)."""
        while not stopped.is_set():
            try:
                self.probe_once()
            except Exception as exc:  # noqa: BLE001
                logger.debug(f"probe round failed: {exc}", "exo.worker.main:_poll_connection_updates:1")
            stopped.wait(self.cfg.timing.edge_probe_s)

    def probe_once(self) -> None:
        port = self.node.args.api_port
        with self.cluster.cond:
            data = self.cluster.state.data
            nodes = [n for n in data["topology"]["nodes"] if n != self.node_id]
            nets = {n: copy.deepcopy(data["nodeNetwork"].get(n)) for n in nodes}
            mine = copy.deepcopy(data["topology"]["connections"].get(self.node_id, {}))
        if self.node_id not in self.cluster.state.data["topology"]["nodes"]:
            return
        for nid in nodes:
            for iface in (nets.get(nid) or {}).get("interfaces", []):
                ip = iface["ipAddress"]
                if ":" in ip:
                    continue
                edge = {"sinkMultiaddr": {"address": f"/ip4/{ip}/tcp/{port}", "address_type": "ip4",
                                          "ip_address": ip, "port": port}}
                ok = ip not in self.cfg.unreachable and _probe(ip, port, self.cfg.node_address) == nid
                present = edge in mine.get(nid, [])
                if ok and not present:
                    self.cluster.publish({"type": "EdgeCreated", "source": self.node_id, "sink": nid, "edge": edge})
                elif not ok and present:
                    self.cluster.publish({"type": "EdgeDeleted", "source": self.node_id, "sink": nid, "edge": edge})


def _probe(ip: str, port: int, source: str) -> str | None:
    """One /node_id probe; None on any failure (silent, as in exo)."""
    for _ in range(3):
        try:
            conn = http.client.HTTPConnection(ip, port, timeout=5, source_address=(source, 0))
            conn.request("GET", "/node_id")
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if resp.status != 200:
                return None
            val = json.loads(data)
            return val if isinstance(val, str) else None
        except (OSError, ValueError):
            time.sleep(0.2)
            continue
    return None


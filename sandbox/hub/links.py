"""The hub's link limits: which client asks, the lines a body to it goes through, and pacing on them.

Contract: `client_key(client, server)` is `user@address` of a connection's client (the user owning the
socket: on loopback every node comes from the same address, each as its own user). `link_rates(faults,
client)` is {line: bytes/s}: the line every client shares (`slow_link_bps`) and the client's own
(`node_link_bps`). `Pacer.pace(lines, nbytes)` holds a chunk until every line it goes through has room
for it (FIFO slots per line), so clients on one line share it and clients on their own lines do not.
"""

from __future__ import annotations

import pwd
import socket
import struct
import threading
import time
from pathlib import Path

from sandbox.hub.faults import Faults, client_named


def _proc_net_addr(host: str, port: int) -> str:
    """An IPv4 address as /proc/net/tcp prints it (little-endian hex, then the port)."""
    return f"{struct.unpack('<I', socket.inet_aton(host))[0]:08X}:{port:04X}"


def client_key(client: tuple, server: tuple, proc_net: Path = Path("/proc/net/tcp")) -> str:
    """`user@address` of a connection's client: the user owning its socket (Linux /proc/net/tcp; "?" when
    not found) and its source address. On loopback a connection to the hub comes from the same address
    whichever node opens it, so the owner (each sandbox node has its own user) tells the nodes apart."""
    user = "?"
    try:
        local, remote = _proc_net_addr(client[0], client[1]), _proc_net_addr(server[0], server[1])
        for line in proc_net.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 7 and cols[1] == local and cols[2] == remote:
                user = pwd.getpwuid(int(cols[7])).pw_name
                break
    except (OSError, ValueError, KeyError, struct.error):
        pass
    return f"{user}@{client[0]}"


def link_rates(faults: Faults, client: str) -> dict[str, int]:
    """The lines a body to `client` goes through: {line: bytes/s} (shared line "", the client's own)."""
    lines = {"": faults.slow_link_bps} if faults.slow_link_bps else {}
    node = faults.node_link_bps
    if isinstance(node, dict):
        node = next((bps for k, bps in node.items() if client_named(client, [k])), node.get("*"))
    if node:
        lines["node:" + client] = node
    return lines


class Pacer:
    """The time each line is next free; a chunk waits for the latest of its lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def pace(self, lines: dict[str, int], nbytes: int) -> None:
        """Throttle a chunk on every line it goes through (the shared one, the client's own): FIFO slots."""
        if not lines:
            return
        with self._lock:
            now = time.monotonic()
            done_at = now
            for line, bps in lines.items():
                start = max(now, self._next.get(line, 0.0))
                self._next[line] = start + nbytes / bps
                done_at = max(done_at, self._next[line])
        delay = done_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the link, not synchronisation

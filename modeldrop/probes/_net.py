"""Shared /proc/net/tcp helpers for the ports and sockets probes (prepended to their payload)."""

from __future__ import annotations

import socket
import struct


def plain_ip(ip: str) -> str:
    """'::ffff:127.0.0.1' -> '127.0.0.1'; '[::1]' -> '::1'."""
    ip = ip.strip("[]")
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


def proc_net_addr(hexaddr: str) -> tuple:
    """A /proc/net/tcp{,6} address field -> (ip, port): '0100007F:1F90' -> ('127.0.0.1', 8080)."""
    ip_hex, port_hex = hexaddr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack("<I", struct.unpack(">I", raw)[0]))
    else:
        words = struct.unpack(">4I", raw)
        ip = plain_ip(socket.inet_ntop(socket.AF_INET6, b"".join(struct.pack("<I", w) for w in words)))
    return ip, int(port_hex, 16)


def proc_net_rows() -> list:
    """The rows (split into columns) of /proc/net/tcp and /proc/net/tcp6 (empty where there is no /proc)."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows += [r.split() for r in f.read().splitlines()[1:]]
        except OSError:
            continue
    return rows

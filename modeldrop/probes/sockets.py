"""Probe `sockets`: {port} -> {sockets: [{local, remote, state}]} for TCP sockets with that local or remote port.

Linux reads /proc/net/tcp{,6}; macOS parses `netstat -an -p tcp` by header name (columns move between
releases; addresses are `a.b.c.d.port` or `*.port`). It never connects to the port.
"""

from __future__ import annotations

import subprocess
import sys

if "proc_net_rows" not in globals():  # imported as a module (tests); on a node _net.py is prepended
    from modeldrop.probes._net import proc_net_addr, proc_net_rows

TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


def linux_sockets(port: int) -> list:
    """TCP sockets from /proc/net/tcp{,6} whose local or remote port is `port`."""
    out = []
    for cols in proc_net_rows():
        if len(cols) < 4:
            continue
        (lip, lport), (rip, rport) = proc_net_addr(cols[1]), proc_net_addr(cols[2])
        if port in (lport, rport):
            out.append({"local": "%s:%d" % (lip, lport), "remote": "%s:%d" % (rip, rport),
                        "state": TCP_STATES.get(cols[3], cols[3])})
    return out


def _split_bsd(addr: str) -> tuple:
    """'127.0.0.1.52415' or '*.52415' or 'fe80::1%lo0.52415' -> (host, port or None)."""
    host, _, port = addr.rpartition(".")
    return host, int(port) if port.isdigit() else None


def parse_netstat(text: str, port: int) -> list:
    """Rows of `netstat -an -p tcp` output (found by header names) with local or remote port == port."""
    out, cols = [], None
    for line in text.splitlines():
        low = line.lower()
        if "local address" in low and "foreign address" in low:
            cols = low.replace("local address", "local_address").replace("foreign address", "foreign_address").split()
            continue
        if cols is None or not line.strip():
            continue
        parts = line.split()
        if len(parts) < len(cols) - 1 or not parts[0].startswith("tcp"):
            continue
        try:
            local = parts[cols.index("local_address")]
            remote = parts[cols.index("foreign_address")]
            state = parts[cols.index("(state)")] if "(state)" in cols and cols.index("(state)") < len(parts) else ""
        except ValueError:
            continue
        (lh, lp), (rh, rp) = _split_bsd(local), _split_bsd(remote)
        if port in (lp, rp):
            out.append({"local": "%s:%s" % (lh, lp), "remote": "%s:%s" % (rh, rp if rp is not None else "*"),
                        "state": state})
    return out


def main(args: dict) -> dict:
    """TCP sockets on this node that involve the port."""
    port = int(args["port"])
    if sys.platform == "darwin":
        proc = subprocess.run(["/usr/sbin/netstat", "-an", "-p", "tcp"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=20, check=False)
        return {"port": port, "sockets": parse_netstat(proc.stdout.decode("utf-8", "replace"), port)}
    return {"port": port, "sockets": linux_sockets(port)}

"""Probe `ports`: {port, addresses} -> {free, listening_on, holders, other_listeners} for a TCP port here.

`free` is False when a connect to the port succeeds on one of `addresses` or on the address this node is
reached at over SSH, or when a listener is bound there or to a wildcard address. Listeners on other
specific addresses (another sandbox node on the same host) are reported in `other_listeners` only.
Holders are best effort: Linux /proc/net/tcp{,6} inodes matched against /proc/*/fd (only the processes we
may read), macOS `lsof -nP -iTCP:<port> -sTCP:LISTEN` (a non-root lsof sees only the user's own
processes, so an empty list proves nothing: the connect test decides).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

if "proc_net_rows" not in globals():  # imported as a module (tests); on a node _net.py is prepended
    from modeldrop.probes._net import plain_ip, proc_net_addr, proc_net_rows

WILDCARDS = {"0.0.0.0", "::", "*"}


def listening(addr: str, port: int) -> bool:
    """True when a TCP connect to addr:port succeeds within 1 s."""
    try:
        with socket.create_connection((addr, port), timeout=1.0):
            return True
    except OSError:
        return False


def linux_listeners(port: int) -> list:
    """[{pid, cmd, local}] for each LISTEN socket on the port; pid None when its owner is not visible."""
    sockets = {}
    for cols in proc_net_rows():
        if len(cols) > 9 and cols[3] == "0A" and proc_net_addr(cols[1])[1] == port:
            sockets[cols[9]] = proc_net_addr(cols[1])[0]
    owners = {}
    if sockets:
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                fds = os.listdir("/proc/%s/fd" % pid)
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in sockets:
                    owners.setdefault(link[8:-1], int(pid))
    return [{"pid": owners.get(inode), "cmd": _cmdline(owners.get(inode)), "local": ip}
            for inode, ip in sorted(sockets.items())]


def _cmdline(pid) -> str:
    if pid is None:
        return ""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def darwin_listeners(port: int) -> list:
    """[{pid, cmd, local}] from `lsof -nP -iTCP:<port> -sTCP:LISTEN -Fpcn`."""
    try:
        proc = subprocess.run(["/usr/sbin/lsof", "-nP", "-iTCP:%d" % port, "-sTCP:LISTEN", "-Fpcn"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    out, pid, cmd = [], None, ""
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("p"):
            pid, cmd = int(line[1:]), ""
        elif line.startswith("c"):
            cmd = line[1:]
        elif line.startswith("n") and pid is not None:
            out.append({"pid": pid, "cmd": cmd, "local": plain_ip(line[1:].rsplit(":", 1)[0])})
    return out


def main(args: dict) -> dict:
    """Connect-test the port and sort its listeners into conflicting holders and others."""
    port = int(args["port"])
    conn = os.environ.get("SSH_CONNECTION", "").split()
    mine = list(args.get("addresses") or ["127.0.0.1"])
    if len(conn) >= 3 and plain_ip(conn[2]) not in mine:
        mine.append(plain_ip(conn[2]))
    on = [a for a in mine if listening(a, port)]
    if sys.platform.startswith("linux"):
        listeners = linux_listeners(port)
    elif sys.platform == "darwin":
        listeners = darwin_listeners(port)
    else:
        listeners = []
    relevant = set(mine) | WILDCARDS
    conflicting = [h for h in listeners if h["local"] in relevant]
    return {"port": port, "addresses": mine, "free": not on and not conflicting, "listening_on": on,
            "holders": [h for h in conflicting if h["pid"] is not None],
            "other_listeners": [h for h in listeners if h["local"] not in relevant]}

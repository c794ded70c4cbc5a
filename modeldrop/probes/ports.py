"""Probe `ports`: {port, addresses} -> {free, listening_on, holders} for a TCP port on this node.

A connect test on each address decides `free`; holders are best effort: Linux /proc/net/tcp{,6} inodes
matched against /proc/*/fd, macOS `lsof -nP -iTCP:<port> -sTCP:LISTEN` (a non-root lsof sees only the
user's own processes, so an empty list does not prove anything).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def listening(addr: str, port: int) -> bool:
    """True when a TCP connect to addr:port succeeds within 1 s."""
    try:
        with socket.create_connection((addr, port), timeout=1.0):
            return True
    except OSError:
        return False


def linux_listen_inodes(port: int) -> set:
    """Socket inodes in LISTEN state (0A) on the port, from /proc/net/tcp and tcp6."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def linux_holders(port: int) -> list:
    """Processes whose fds point at a listening socket on the port (only those we may read)."""
    inodes = linux_listen_inodes(port)
    holders = []
    if not inodes:
        return holders
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
                except OSError:
                    cmd = ""
                holders.append({"pid": int(pid), "cmd": cmd})
                break
    return holders


def darwin_holders(port: int) -> list:
    """`lsof -nP -iTCP:<port> -sTCP:LISTEN` rows as {pid, cmd}."""
    try:
        proc = subprocess.run(["/usr/sbin/lsof", "-nP", "-iTCP:%d" % port, "-sTCP:LISTEN", "-Fpc"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    holders, cur = [], None
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("p"):
            cur = {"pid": int(line[1:]), "cmd": ""}
            holders.append(cur)
        elif line.startswith("c") and cur is not None:
            cur["cmd"] = line[1:]
    return holders


def main(args: dict) -> dict:
    """Connect-test the port on each address and name the holders where the OS lets us."""
    port = int(args["port"])
    addresses = list(args.get("addresses") or ["127.0.0.1"])
    on = [a for a in addresses if listening(a, port)]
    if sys.platform.startswith("linux"):
        holders = linux_holders(port)
    elif sys.platform == "darwin":
        holders = darwin_holders(port)
    else:
        holders = []
    return {"port": port, "free": not on and not holders, "listening_on": on, "holders": holders}

"""Probe `reach`: {targets: [[host, port], ...], timeout} -> {results: [{host, port, ok, errno, error, seconds}]}.

A TCP connect from this node to each target; errno tells macOS Local Network privacy (65 EHOSTUNREACH)
from a firewall drop (60 ETIMEDOUT, or a socket timeout) and a closed port (61 ECONNREFUSED).
"""

from __future__ import annotations

import errno as errno_mod
import socket
import time


def connect(host: str, port: int, timeout: float) -> dict:
    """One connect attempt and its outcome."""
    t0 = time.monotonic()
    out = {"host": host, "port": port, "ok": False, "errno": None, "error": None}
    try:
        with socket.create_connection((host, port), timeout=timeout):
            out["ok"] = True
    except socket.timeout:
        out["errno"] = errno_mod.ETIMEDOUT
        out["error"] = "timed out after %ss" % timeout
    except OSError as exc:
        out["errno"] = exc.errno
        out["error"] = exc.strerror or str(exc)
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


def main(args: dict) -> dict:
    """Connect to every target (in order) with the given timeout."""
    timeout = float(args.get("timeout", 3))
    return {"results": [connect(str(h), int(p), timeout) for h, p in args.get("targets") or []]}

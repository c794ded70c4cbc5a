"""Probe: can this node open a TCP connection to each (host, port)? Stdlib, Python 3.9.

args: {"targets": [[host, port], ...], "timeout": seconds}
result: {"results": [{"host", "port", "ok", "errno", "error", "seconds"}]}
errno is the node's own number (macOS: 60 timed out, 61 refused, 65 no route / local network privacy).
"""
from __future__ import annotations

import errno as _errno
import socket
import time


def _try(host, port, timeout):
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout):
            return {"host": host, "port": port, "ok": True, "errno": None, "error": None,
                    "seconds": round(time.monotonic() - t0, 4)}
    except socket.timeout:
        code = getattr(_errno, "ETIMEDOUT", 60)
        return {"host": host, "port": port, "ok": False, "errno": code, "error": "timed out",
                "seconds": round(time.monotonic() - t0, 4)}
    except OSError as e:
        return {"host": host, "port": port, "ok": False, "errno": e.errno, "error": e.strerror or str(e),
                "seconds": round(time.monotonic() - t0, 4)}


def main(args):
    timeout = float(args.get("timeout", 3))
    return {"results": [_try(h, p, timeout) for h, p in args.get("targets", [])]}

"""Probe `hashes`: {path, files: [rel], workers} -> {sha256: {rel: hex}, errors, bytes, seconds}.

Files are hashed in a thread pool with 8 MiB reads (hashlib releases the GIL on large updates).
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

CHUNK = 8 * 1024 * 1024


def sha256_file(path: str) -> tuple:
    """(hex digest, bytes read) of one file."""
    h = hashlib.sha256()
    n = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            got = f.readinto(buf)
            if not got:
                break
            h.update(view[:got])
            n += got
    return h.hexdigest(), n


def main(args: dict) -> dict:
    """sha256 of each listed file (relative to the expanded path); unreadable files land in `errors`."""
    root = os.path.expanduser(args["path"])
    files = list(args.get("files") or [])
    workers = max(1, int(args.get("workers") or min(8, (os.cpu_count() or 2))))
    t0 = time.monotonic()
    out = {"sha256": {}, "errors": {}, "bytes": 0, "seconds": 0.0, "workers": workers}

    def one(rel: str):
        try:
            return rel, sha256_file(os.path.join(root, rel)), None
        except OSError as exc:
            return rel, None, "%s: %s" % (type(exc).__name__, exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rel, res, err in pool.map(one, files):
            if err:
                out["errors"][rel] = err
            else:
                out["sha256"][rel] = res[0]
                out["bytes"] += res[1]
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out

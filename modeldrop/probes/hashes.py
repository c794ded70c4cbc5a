"""Probe `hashes`: {path, files: [rel], workers} -> {sha256: {rel: hex}, errors, bytes, seconds}.

Files are hashed in a thread pool with 8 MiB reads (hashlib releases the GIL on large updates); how far it is
(bytes hashed of the files' total, files done) goes out as progress lines every few seconds (`_progress.py`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

if "progress_say" not in globals():  # imported as a module (tests); on a node _progress.py is prepended
    from modeldrop.probes._progress import progress_say

CHUNK = 8 * 1024 * 1024


def sha256_file(path: str, on_bytes=None) -> tuple:
    """(hex digest, bytes read) of one file; `on_bytes(n)` after each read."""
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
            if on_bytes is not None:
                on_bytes(got)
    return h.hexdigest(), n


def main(args: dict) -> dict:
    """sha256 of each listed file (relative to the expanded path); unreadable files land in `errors`."""
    root = os.path.expanduser(args["path"])
    files = list(args.get("files") or [])
    workers = max(1, int(args.get("workers") or min(8, (os.cpu_count() or 2))))
    t0 = time.monotonic()
    out = {"sha256": {}, "errors": {}, "bytes": 0, "seconds": 0.0, "workers": workers}
    total = 0
    for rel in files:
        try:
            total += os.path.getsize(os.path.join(root, rel))
        except OSError:
            pass
    seen = {"bytes": 0, "files_done": 0}
    lock = threading.Lock()

    def say(force: bool = False) -> None:
        progress_say({"bytes": seen["bytes"], "total": total, "files_done": seen["files_done"],
                      "files": len(files)}, force)

    def counted(n: int) -> None:
        with lock:
            seen["bytes"] += n
        say()

    def one(rel: str):
        try:
            res = rel, sha256_file(os.path.join(root, rel), counted), None
        except OSError as exc:
            res = rel, None, "%s: %s" % (type(exc).__name__, exc)
        with lock:
            seen["files_done"] += 1
        return res

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rel, res, err in pool.map(one, files):
            if err:
                out["errors"][rel] = err
            else:
                out["sha256"][rel] = res[0]
                out["bytes"] += res[1]
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out

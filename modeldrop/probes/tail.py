"""Probe `tail`: {path, max_bytes, mark, match} -> the last max_bytes of a file (decoded, errors replaced); with
`files` ([{path, mark}, ...]) instead of `path`, {"files": [that result for each]}: one round trip for several logs.

With `mark` ({inode, size}: where the file stood at some earlier moment, e.g. a launch), only what was written
after it: from mark.size on while the file is still that inode and at least that long; all of it (its last
max_bytes) when the file was replaced or truncated since (started afresh: everything in it is newer). `from`
says where reading began. With `match` (regexes), every line after the mark that matches one of them, however
far back, instead of the tail (the newest max_bytes of them): a line logged once at placement is still found
after a long benchmark has grown the log.
"""

from __future__ import annotations

import os
import re
from collections import deque


def main(args: dict) -> dict:
    """The tail of the expanded path (after the mark, when given), or exists=False; of each of `files`, in order."""
    if "files" in args:
        return {"files": [_tail({**args, "path": f["path"], "mark": f.get("mark")}) for f in args["files"]]}
    return _tail(args)


def _tail(args: dict) -> dict:
    """One file's tail (see `main`)."""
    expanded = os.path.expanduser(args["path"])
    max_bytes = int(args.get("max_bytes", 65536))
    out = {"expanded": expanded, "exists": os.path.isfile(expanded), "size": None, "text": "", "from": 0}
    if not out["exists"]:
        return out
    mark = args.get("mark") or {}
    with open(expanded, "rb") as f:
        st = os.fstat(f.fileno())
        size = st.st_size
        floor = 0
        if mark.get("inode") is not None and mark["inode"] == st.st_ino and size >= int(mark.get("size") or 0):
            floor = int(mark.get("size") or 0)
        if args.get("match"):
            f.seek(floor)
            out["size"], out["from"] = size, floor
            out["text"] = _matching(f, [re.compile(rx) for rx in args["match"]], size - floor, max_bytes)
            return out
        start = max(floor, size - max_bytes)
        f.seek(start)
        data = f.read(size - start)
    out["size"], out["from"] = size, start
    out["text"] = data.decode("utf-8", "replace")
    return out


def _matching(f, patterns: list, length: int, max_bytes: int) -> str:
    """The lines of the next `length` bytes of f that match a pattern, the newest max_bytes of them (read a line at
    a time: a long log is never held whole)."""
    kept, total, offset = deque(), 0, 0
    for raw in f:
        if offset >= length:  # this line was written after the size was read
            break
        offset += len(raw)
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        if any(p.search(line) for p in patterns):
            kept.append(line)
            total += len(line) + 1
            while total > max_bytes and len(kept) > 1:
                total -= len(kept.popleft()) + 1
    return "\n".join(kept)

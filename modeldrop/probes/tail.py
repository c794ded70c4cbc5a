"""Probe `tail`: {path, max_bytes} -> the last max_bytes of a file (decoded, errors replaced)."""

from __future__ import annotations

import os


def main(args: dict) -> dict:
    """The tail of the expanded path, or exists=False."""
    expanded = os.path.expanduser(args["path"])
    max_bytes = int(args.get("max_bytes", 65536))
    out = {"expanded": expanded, "exists": os.path.isfile(expanded), "size": None, "text": ""}
    if not out["exists"]:
        return out
    with open(expanded, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read(max_bytes)
    out["size"] = size
    out["text"] = data.decode("utf-8", "replace")
    return out

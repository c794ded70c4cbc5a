"""Probe `disk`: {path} -> free/total bytes where the path is (or would be), and whether its parent is writable."""

from __future__ import annotations

import os


def main(args: dict) -> dict:
    """statvfs of the nearest existing ancestor of the expanded path; parent_writable for creating it."""
    expanded = os.path.abspath(os.path.expanduser(args["path"]))
    nearest = expanded
    while not os.path.exists(nearest) and os.path.dirname(nearest) != nearest:
        nearest = os.path.dirname(nearest)
    st = os.statvfs(nearest)
    parent = os.path.dirname(expanded.rstrip("/")) or "/"
    probe = parent if os.path.exists(parent) else nearest
    return {"expanded": expanded, "nearest_existing": nearest, "exists": os.path.exists(expanded),
            "free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize,
            "parent": parent, "parent_exists": os.path.isdir(parent),
            "parent_writable": os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)}

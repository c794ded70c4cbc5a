"""Probe `fs`: {op: mkdir|touch|exists, path} -> {ok, expanded}."""

from __future__ import annotations

import os


def main(args: dict) -> dict:
    """mkdir -p, touch, or test existence of the expanded path; ok is False with `error` on OSError."""
    op = args["op"]
    expanded = os.path.expanduser(args["path"])
    out = {"ok": False, "expanded": expanded, "error": None}
    try:
        if op == "mkdir":
            os.makedirs(expanded, exist_ok=True)
            out["ok"] = True
        elif op == "touch":
            with open(expanded, "a"):
                pass
            os.utime(expanded, None)
            out["ok"] = True
        elif op == "exists":
            out["ok"] = os.path.exists(expanded)
            out["is_dir"] = os.path.isdir(expanded)
        else:
            out["error"] = "unknown op %r" % op
    except OSError as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    return out

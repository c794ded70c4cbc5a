"""Probe `fs`: {op: mkdir|touch|exists|stat, path} -> {ok, expanded}; or {ops: [[op, path], ...]} -> {ok, results}.

`stat` is ok for a missing file too: `exists`, and for a file its `size` and `inode` (where a log stood).

The batch form does several small file operations in one round trip (e.g. the launcher's first-run
marker and log dir); `ok` is True only when every operation succeeded.
"""

from __future__ import annotations

import os


def _one(op, path):
    """mkdir -p, touch, or test existence of the expanded path; ok is False with `error` on OSError."""
    expanded = os.path.expanduser(path)
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
        elif op == "stat":
            out["ok"], out["exists"] = True, os.path.isfile(expanded)
            if out["exists"]:
                st = os.stat(expanded)
                out["size"], out["inode"] = st.st_size, st.st_ino
        else:
            out["error"] = "unknown op %r" % op
    except OSError as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    return out


def main(args: dict) -> dict:
    """One operation (`op`, `path`) or a batch (`ops`), in order."""
    if "ops" in args:
        results = [_one(op, path) for op, path in args["ops"]]
        return {"ok": all(r["ok"] for r in results), "results": results}
    return _one(args["op"], args["path"])

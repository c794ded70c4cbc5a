"""Probe `tool`: {path, args, timeout, env} -> does this exact binary exist, and what does it print.

The path is tilde-expanded on the node; the tool runs with a timeout and no shell. `env` adds variables.
"""

from __future__ import annotations

import os
import subprocess
import time


def main(args: dict) -> dict:
    """Run `path args...` (expanded) with a timeout; report existence, realpath, rc and output heads."""
    path = args["path"]
    expanded = os.path.expanduser(path)
    out = {"path": path, "expanded": expanded, "exists": os.path.exists(expanded),
           "executable": os.path.isfile(expanded) and os.access(expanded, os.X_OK),
           "realpath": os.path.realpath(expanded) if os.path.exists(expanded) else None,
           "rc": None, "stdout_head": "", "stderr_head": "", "duration_s": 0.0, "error": None}
    if not out["executable"]:
        out["error"] = "not found" if not out["exists"] else "not executable"
        return out
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (args.get("env") or {}).items()})
    head = int(args.get("head_bytes", 4000))
    t0 = time.monotonic()
    try:
        proc = subprocess.run([expanded] + [str(a) for a in args.get("args", [])], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              timeout=float(args.get("timeout", 30)), check=False)
        out["rc"] = proc.returncode
        out["stdout_head"] = proc.stdout[:head].decode("utf-8", "replace")
        out["stderr_head"] = proc.stderr[:head].decode("utf-8", "replace")
    except subprocess.TimeoutExpired as exc:
        out["error"] = "timed out after %ss" % args.get("timeout", 30)
        out["stdout_head"] = (exc.stdout or b"")[:head].decode("utf-8", "replace")
        out["stderr_head"] = (exc.stderr or b"")[:head].decode("utf-8", "replace")
    except OSError as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    out["duration_s"] = round(time.monotonic() - t0, 3)
    return out

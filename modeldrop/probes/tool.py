"""Probe `tool`: {path, args, timeout, env} -> does this exact binary exist, and what does it print.

The path is tilde-expanded on the node; the tool runs with a timeout and no shell. `env` adds variables.
The tool never outlives the probe: it shares the probe's process group (a stop of the group reaches it) and
a SIGTERM to the probe alone kills it before the probe exits. At the timeout the tool and every process it
started (its descendants, listed before the kill, each killed only while still the process listed) are
killed, and its output is read for at most KILL_WAIT_S more: a process that still holds the pipe cannot
stretch the limit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

if "proc_info" not in globals():  # imported as a module (tests); on a node _proc.py is prepended
    from modeldrop.probes._proc import descendants, signal_checked

KILL_WAIT_S = 3.0


def kill_tree(child: subprocess.Popen) -> None:
    """SIGKILL the child (ours: not yet reaped) and each descendant it started."""
    below = descendants(child.pid)
    child.kill()
    for row in below:
        try:
            signal_checked(row, signal.SIGKILL)
        except OSError:
            pass


def run_owned(argv: list, env: dict, timeout: float) -> tuple:
    """(rc, stdout, stderr) of argv; subprocess.TimeoutExpired (child and descendants killed) after timeout, with
    what was read within KILL_WAIT_S more; a SIGTERM to this process kills the child first, then exits 143."""
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env)
    if "watch_child" in globals():  # under node-side limits (_watch.py): the child ends with this probe
        globals()["watch_child"](child)

    def on_term(signum: int, frame: object) -> None:
        child.kill()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(child)
            try:
                stdout, stderr = child.communicate(timeout=KILL_WAIT_S)
            except subprocess.TimeoutExpired as late:  # something still holds the pipe: stop reading
                stdout, stderr = late.stdout, late.stderr
            raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return child.returncode, stdout, stderr


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
        rc, stdout, stderr = run_owned([expanded] + [str(a) for a in args.get("args", [])], env,
                                       float(args.get("timeout", 30)))
        out["rc"] = rc
        out["stdout_head"] = stdout[:head].decode("utf-8", "replace")
        out["stderr_head"] = stderr[:head].decode("utf-8", "replace")
    except subprocess.TimeoutExpired as exc:
        out["error"] = "timed out after %ss" % args.get("timeout", 30)
        out["stdout_head"] = (exc.stdout or b"")[:head].decode("utf-8", "replace")
        out["stderr_head"] = (exc.stderr or b"")[:head].decode("utf-8", "replace")
    except OSError as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    out["duration_s"] = round(time.monotonic() - t0, 3)
    return out

"""Probe `supervise`: {argv, stall_dir, stall_s, poll_s} -> {rc, ended, seconds, last_files, still_s}.

Runs argv (argv[0] tilde-expanded, no shell) as a child sharing this probe's stdout and stderr, so its output
reaches the caller as it comes, and its process group (a stop of the group reaches both). Run under `_watch` (as
`Node.supervise` runs it) the child ends with the probe's limit, with its controller or on SIGTERM, and is in the
probe's record on the node. With `stall_dir`, the bytes under that dir are summed every poll_s: when they have not
grown for stall_s the child is stopped (SIGTERM, SIGKILL after 5 s) and `ended` is "stalled", with `last_files` the
files under stall_dir (relative paths, newest first, at most 200) and `still_s` how long nothing grew. `ended`
is "exited" otherwise; rc is the child's exit code (negative: the signal that ended it), 127 when it cannot start.
"""

from __future__ import annotations

import os
import subprocess
import time

if "watch_child" not in globals():  # imported as a module (tests); on a node _proc.py and _watch.py are prepended
    from modeldrop.probes._watch import stop_children, watch_child


def dir_state(root: str) -> tuple:
    """(total bytes under root, [(mtime, relative path)] of its files)."""
    total, files = 0, []
    for base, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            total += st.st_size
            files.append((st.st_mtime, os.path.relpath(path, root)))
    return total, files


def main(args: dict) -> dict:
    """Run argv to its end, or until nothing grows under stall_dir for stall_s (see the module docstring)."""
    argv = [str(a) for a in args["argv"]]
    argv[0] = os.path.expanduser(argv[0])
    t0 = time.monotonic()
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    except OSError as exc:
        return {"rc": 127, "ended": "not-started", "error": "%s: %s" % (type(exc).__name__, exc), "seconds": 0.0}
    if "watch_child" in globals():
        watch_child(child)
    stall_dir = os.path.expanduser(args["stall_dir"]) if args.get("stall_dir") else None
    stall_s = float(args.get("stall_s") or 0)
    poll_s = float(args.get("poll_s") or max(0.2, min(5.0, stall_s / 4 if stall_s else 5.0)))
    size, grew = dir_state(stall_dir)[0] if stall_dir else 0, time.monotonic()
    while True:
        try:
            rc = child.wait(timeout=poll_s)
            return {"rc": rc, "ended": "exited", "seconds": round(time.monotonic() - t0, 3)}
        except subprocess.TimeoutExpired:
            pass
        if not stall_dir or stall_s <= 0:
            continue
        now_size, files = dir_state(stall_dir)
        if now_size != size:
            size, grew = now_size, time.monotonic()
        elif time.monotonic() - grew >= stall_s:
            stop_children()
            return {"rc": child.wait(), "ended": "stalled", "still_s": round(time.monotonic() - grew, 1),
                    "last_files": [p for _, p in sorted(files, reverse=True)[:200]],
                    "seconds": round(time.monotonic() - t0, 3)}

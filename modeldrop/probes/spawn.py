"""Probe `spawn`: {argv, env, unset_env, cwd, log_path, pid_file} -> {pid, start, pgid, log_path}.

Starts argv detached (new session, stdin /dev/null, stdout+stderr appended to log_path), writes the pid
file, and returns at once: the child survives the SSH channel closing. Paths are tilde-expanded.
"""

from __future__ import annotations

import os
import subprocess

if "proc_info" not in globals():  # imported as a module (tests); on a node _proc.py is prepended
    from modeldrop.probes._proc import proc_info


def main(args: dict) -> dict:
    """Popen(start_new_session=True) with the log as stdout/stderr; the pid file holds the child's pid."""
    argv = [str(a) for a in args["argv"]]
    argv[0] = os.path.expanduser(argv[0])
    env = dict(os.environ)
    for name in args.get("unset_env") or []:
        env.pop(name, None)
    env.update({str(k): str(v) for k, v in (args.get("env") or {}).items()})
    log_path = os.path.expanduser(args["log_path"])
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    cwd = os.path.expanduser(args["cwd"]) if args.get("cwd") else None
    with open(log_path, "ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 cwd=cwd, env=env, start_new_session=True, close_fds=True)
    pid_file = os.path.expanduser(args["pid_file"]) if args.get("pid_file") else None
    if pid_file:
        os.makedirs(os.path.dirname(pid_file) or ".", exist_ok=True)
        tmp = pid_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % child.pid)
        os.replace(tmp, pid_file)
    info = proc_info(child.pid)
    return {"pid": child.pid, "pgid": child.pid, "start": info["start"] if info else None,
            "exe": info["exe"] if info else None, "exited_rc": child.poll(), "log_path": log_path,
            "pid_file": pid_file}

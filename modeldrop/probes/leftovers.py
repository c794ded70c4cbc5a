"""Probe `leftovers`: {record_dir, stop, grace_s, own_run} -> {found: [...], removed: n}.

Reads the records long remote work keeps on the node while it runs (`_watch.py`: `<record_dir>/<pid>.json`) and
checks each process a record names (the watched process and its children): it is still that process when it is
this user's and its pid, start time and argv0 are as recorded. A record naming none that still is (the work
ended, or the pid is now another process's) is a leftover file: removed, counted in `removed`. Otherwise its
heartbeat (the file's mtime) says whose it is: touched within 3 heartbeats + 5 s, it is the work of a live run
(`state` "live", left alone); older, its controller is gone and it did not end itself (`state` "orphaned"): with
`stop`, each of its processes gets SIGTERM, then SIGKILL after grace_s, by pid and only while it is still the
process recorded, and the record is removed once none runs (`result`). Records of `own_run` (the asking run's
own work, e.g. on several nodes that are one machine) are neither reported nor touched.
found: [{pid, run_id, what, state, heartbeat_age_s, procs: [{pid, start, argv0}], result}]
"""

from __future__ import annotations

import json
import os
import signal
import time

if "proc_info" not in globals():  # imported as a module (tests); on a node _proc.py is prepended
    from modeldrop.probes._proc import proc_info, same_process, signal_checked


def still_running(entry: dict) -> bool:
    """Is the recorded process (pid, start, argv0) still running as itself, as this user?"""
    if not entry.get("pid") or entry.get("start") is None:
        return False
    now = proc_info(int(entry["pid"]))
    if now is None or now.get("uid") != os.getuid() or not same_process(now, entry):
        return False
    argv0 = entry.get("argv0")
    return not argv0 or (now.get("cmdline") or [None])[0] == argv0


def stop_all(procs: list, grace: float) -> str:
    """SIGTERM each, SIGKILL after grace what still is the process recorded; what happened, in words."""
    for p in procs:
        try:
            signal_checked(p, signal.SIGTERM)
        except OSError:
            pass
    end = time.monotonic() + grace
    while time.monotonic() < end and any(still_running(p) for p in procs):
        time.sleep(0.1)
    late = [p for p in procs if still_running(p)]
    for p in late:
        try:
            signal_checked(p, signal.SIGKILL)
        except OSError:
            pass
    end = time.monotonic() + 5
    while time.monotonic() < end and any(still_running(p) for p in late):
        time.sleep(0.1)
    left = [p for p in procs if still_running(p)]
    if left:
        return "still running after SIGKILL: pid %s" % ", ".join(str(p["pid"]) for p in left)
    return "stopped-kill" if late else "stopped-term"


def main(args: dict) -> dict:
    """Every record under record_dir, checked (and, with `stop`, an orphan stopped): see the module docstring."""
    folder = os.path.expanduser(args["record_dir"])
    out: dict = {"found": [], "removed": 0}
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except OSError:
        return out
    for name in names:
        path = os.path.join(folder, name)
        try:
            with open(path) as f:
                rec = json.load(f)
            age = time.time() - os.stat(path).st_mtime
        except (OSError, ValueError):
            continue
        if args.get("own_run") and rec.get("run_id") == args["own_run"]:
            continue
        procs = [p for p in [rec] + list(rec.get("children") or []) if still_running(p)]
        if not procs:
            _remove(path)
            out["removed"] += 1
            continue
        live = age <= 3 * float(rec.get("heartbeat_s") or 5) + 5
        row = {"pid": rec.get("pid"), "run_id": rec.get("run_id"), "what": rec.get("what"),
               "state": "live" if live else "orphaned", "heartbeat_age_s": round(age, 1),
               "procs": [{k: p.get(k) for k in ("pid", "start", "argv0")} for p in procs], "result": None}
        if not live and args.get("stop"):
            row["result"] = stop_all(procs, float(args.get("grace_s", 10)))
            if not any(still_running(p) for p in procs):
                _remove(path)
        out["found"].append(row)
    return out


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

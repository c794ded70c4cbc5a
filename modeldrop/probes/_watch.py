"""Node-side limits of long remote work (prepended, with _proc.py, to a probe whose args hold `_watch`; not a probe).

`_watch` = {limit_s, heartbeat_s, record_dir, run_id, what}. `watch_start(spec)` records the process on the node in
`<record_dir>/<pid>.json` (the dir made 0700): pid, start, argv0, run id, what, deadline, heartbeat_s and the
children it starts (`watch_child(popen)`); the file's mtime is its last heartbeat. A daemon thread writes ALIVE on
stderr every heartbeat_s and touches the file. The process ends itself when its limit passes (exit 124), when a
heartbeat cannot be written (exit 125: the controller's connection is gone and sshd closed the pipe), or on SIGTERM
(exit 143): its children and what they started get SIGTERM, SIGKILL after CHILD_GRACE_S (each only while it is still
the process listed), the record is removed, and it exits. `watch_end()` removes the record after a normal end. The
next run's preflight reads the records a crashed controller's processes left (probe `leftovers`).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

if "proc_info" not in globals():  # imported as a module (tests); on a node _proc.py is prepended
    from modeldrop.probes._proc import descendants, proc_info, same_process, signal_checked

ALIVE = "modeldrop-alive"
CHILD_GRACE_S = 5.0
_W: dict = {"path": None, "record": None, "children": [], "lock": threading.Lock(), "ending": False}


def _write_record() -> None:
    """The record, atomically (best effort: a node whose home is not writable still gets the limits)."""
    path = _W["path"]
    if not path:
        return
    try:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_W["record"], f)
        os.replace(tmp, path)
    except OSError:
        _W["path"] = None


def watch_start(spec: dict) -> None:
    """Record this process on the node and start its heartbeat and limit (see the module docstring)."""
    me = proc_info(os.getpid()) or {}
    limit, beat = float(spec["limit_s"]), float(spec.get("heartbeat_s") or 5.0)
    try:
        folder = os.path.expanduser(spec["record_dir"])
        os.makedirs(folder, mode=0o700, exist_ok=True)
        _W["path"] = os.path.join(folder, "%d.json" % os.getpid())
    except OSError:
        _W["path"] = None
    _W["record"] = {"pid": os.getpid(), "start": me.get("start"), "argv0": (me.get("cmdline") or [None])[0],
                    "run_id": spec.get("run_id"), "what": spec.get("what"), "deadline": time.time() + limit,
                    "heartbeat_s": beat, "children": []}
    _write_record()
    signal.signal(signal.SIGTERM, lambda signum, frame: _end(143))
    threading.Thread(target=_beat, args=(time.monotonic() + limit, beat), daemon=True).start()


def watch_child(child) -> None:
    """A child this process started (a subprocess.Popen): it ends with the process, and is in the record."""
    _W["children"].append(child)
    if _W["record"] is None:  # not watched: the child still ends with stop_children
        return
    info = proc_info(child.pid) or {"pid": child.pid}
    _W["record"]["children"].append({"pid": child.pid, "start": info.get("start"),
                                     "argv0": (info.get("cmdline") or [None])[0]})
    _write_record()


def watch_end() -> None:
    """The work ended: its record goes. While the limit, a lost controller or a SIGTERM is ending the process
    (its children first), this waits for that end: the exit code says why, not a result that raced it."""
    if _W["ending"]:
        threading.Event().wait()
    _remove_record()


def _remove_record() -> None:
    if _W["path"]:
        try:
            os.unlink(_W["path"])
        except OSError:
            pass


def _beat(deadline: float, beat: float) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            _end(124)
            return
        time.sleep(min(beat, left))
        if time.monotonic() >= deadline:
            continue
        try:
            os.write(2, (ALIVE + "\n").encode())
        except OSError:  # EPIPE: nobody reads our output any more
            _end(125)
            return
        if _W["path"]:
            try:
                os.utime(_W["path"], None)
            except OSError:
                pass


def stop_children(grace: float = CHILD_GRACE_S) -> None:
    """SIGTERM each child and what it started, SIGKILL what is left after grace (each still the process listed)."""
    rows = []
    for child in _W["children"]:
        if child.poll() is None:
            rows += descendants(child.pid)
            child.terminate()
    for row in rows:
        _signal(row, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and (any(c.poll() is None for c in _W["children"]) or
                                      any(_alive(r) for r in rows)):
        time.sleep(0.05)
    for child in _W["children"]:
        if child.poll() is None:
            child.kill()
    for row in rows:
        _signal(row, signal.SIGKILL)


def _signal(row: dict, sig: int) -> None:
    try:
        signal_checked(row, sig)
    except OSError:
        pass


def _alive(row: dict) -> bool:
    now = proc_info(int(row["pid"]))
    return now is not None and same_process(now, row)


def _end(code: int) -> None:
    """End this process and its children (once, whichever thread gets here first)."""
    with _W["lock"]:
        if _W["ending"]:
            return
        _W["ending"] = True
    try:
        stop_children()
    finally:
        _remove_record()
        os._exit(code)

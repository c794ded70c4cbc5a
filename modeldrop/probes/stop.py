"""Probe `stop`: {pid, expect_start, expect_argv0 | expect_exe, grace_s, orphans} -> {result, detail}.

Signals only a process whose identity still matches (start time within tolerance, and exe or argv0):
TERM to its process group when it leads its own session (as `spawn` starts it), otherwise to the pid alone, poll
until the group is gone or grace_s passed, then KILL. With `orphans` (the caller spawned `pid` as a session
leader): when `pid` is gone but its process group lives on (the runners of an exo that was killed), the group
gets the same TERM then KILL; the system never reuses a pid while a process group with that id exists, so the
group's members are the leader's own children. result: stopped-term | stopped-kill | gone | mismatch |
not-permitted (another user's process: never an error).
"""

from __future__ import annotations

import os
import signal
import time

if "proc_info" not in globals():  # imported as a module (tests); on a node _proc.py is prepended
    from modeldrop.probes._proc import START_TOLERANCE_S, proc_info


def mismatch(info: dict, args: dict) -> str | None:
    """Why the live process is not the one we started, or None when it is."""
    want_start = args.get("expect_start")
    if want_start is not None and info.get("start") is not None:
        if abs(float(info["start"]) - float(want_start)) > START_TOLERANCE_S:
            return "pid %d started at %s, expected %s (pid reused?)" % (info["pid"], info["start"], want_start)
    exe = args.get("expect_exe")
    if exe:
        real = os.path.realpath(os.path.expanduser(exe))
        have = info.get("exe")
        argv = info.get("cmdline") or []
        if not have and argv:
            have = argv[0]
        if have is None or os.path.realpath(have) != real:
            return "pid %d runs %s, expected %s" % (info["pid"], have, real)
    argv0 = args.get("expect_argv0")
    if argv0:
        argv = info.get("cmdline") or []
        have0 = argv[0] if argv else None
        if have0 != argv0 and not (have0 and os.path.basename(have0) == os.path.basename(argv0) and
                                   "/" not in argv0):
            return "pid %d argv0 is %r, expected %r" % (info["pid"], have0, argv0)
    if want_start is None and not exe and not argv0:
        return "refusing to signal pid %d without an identity to check (expect_start/expect_exe/argv0)" % info["pid"]
    return None


def alive(pid: int, group: bool) -> bool:
    """Does the process (or any member of its group) still exist (zombies count as gone)?"""
    if not group:
        return proc_info(pid) is not None
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return proc_info(pid) is not None or _group_has_live_members(pid)


def _group_has_live_members(pgid: int) -> bool:
    """Linux: does any non-zombie process have this pgid? (True where /proc is missing.)"""
    if not os.path.isdir("/proc"):
        return True
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[2]) == pgid and rest[0] != "Z":
            return True
    return False


def send(pid: int, group: bool, sig: int) -> None:
    """Signal the group (or the pid alone); a vanished target is fine."""
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pid: int, group: bool, seconds: float) -> bool:
    """Poll until the process (group) is gone or the deadline passes; True when gone."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid, group):
            return True
        time.sleep(0.05)
    return not alive(pid, group)


def main(args: dict) -> dict:
    """Stop the process if it is still the expected one."""
    pid = int(args["pid"])
    info = proc_info(pid)
    if info is None:
        if args.get("orphans") and args.get("expect_start") is not None and alive(pid, True):
            return _stop_group(pid, True, float(args.get("grace_s", 10)), "pid %d was gone; its process group" % pid)
        return {"result": "gone", "detail": "pid %d is not running" % pid}
    why = mismatch(info, args)
    if why:
        return {"result": "mismatch", "detail": why, "found": info}
    try:  # a session leader (what `spawn` starts) owns its group; a shell's job leader shares it with its pipe
        group = os.getsid(pid) == pid and os.getpgid(pid) == pid and pid != os.getpgid(0)
    except ProcessLookupError:
        return {"result": "gone", "detail": "pid %d exited" % pid}
    return _stop_group(pid, group, float(args.get("grace_s", 10)), "pid %d%s" % (pid, " (group)" if group else ""))


def _stop_group(pid: int, group: bool, grace_s: float, what: str) -> dict:
    """TERM the pid (or its group), wait up to grace_s, then KILL."""
    try:
        send(pid, group, signal.SIGTERM)
    except PermissionError:
        return {"result": "not-permitted", "detail": "pid %d belongs to another user; not signalled" % pid}
    if wait_gone(pid, group, grace_s):
        return {"result": "stopped-term", "detail": "%s exited after SIGTERM" % what}
    send(pid, group, signal.SIGKILL)
    wait_gone(pid, group, 5.0)
    return {"result": "stopped-kill", "detail": "%s did not exit within %ss of SIGTERM; sent SIGKILL" % (what, grace_s)}

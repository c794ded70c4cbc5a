"""Probe `stop`: {pid, expect_start, expect_argv0 | expect_exe, grace_s, orphans, expect_exes, expect_cmd}
-> {result, detail}.

Signals only what is proven to be ours:
- `pid` alive: its identity must match (start time within tolerance, and exe or argv0 when given). A session
  leader (as `spawn` starts exo) gets TERM to its process group, any other process TERM alone; after grace_s the
  KILL is identity-checked again: to the group while its leader is still the same process; when the leader is
  gone, to each remaining member that was in the group when the leader was checked (same pid and start) or is
  proven ours (below), and to nothing else; to a lone pid only while it is still the same process.
- `pid` gone, with `orphans` (the caller spawned `pid` as a session leader, e.g. exo whose runners outlived it):
  its process group is stopped only when every member is proven ours, else nothing is signalled.
A member of group `pid` is proven ours when it is this user's, in session `pid` (where the system says), started
at or after expect_start (or the leader's start), and runs one of the executables the caller expects: the
leader's own (when it was seen alive), `expect_exes` (what `spawn` reported), or the binary or interpreter that
running `expect_cmd` executes (see probe `procs`).
result: stopped-term | stopped-kill | gone | mismatch | not-permitted (another user's process: never an error) |
refused (orphans not all proven ours: nothing signalled) | left-running (what was proven ours was stopped; the
survivors named in `detail` were not proven ours and were left running).
"""

from __future__ import annotations

import os
import signal
import time

if "proc_info" not in globals():  # imported as a module (tests); on a node _proc.py and procs.py are prepended
    from modeldrop.probes._proc import (
        START_TOLERANCE_S,
        group_members,
        proc_info,
        same_process,
        signal_checked,
    )
    from modeldrop.probes.procs import program


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


def expected_exes(args: dict, leader: dict | None = None) -> set:
    """Realpaths of the executables a member of our group may run (see the module docstring)."""
    paths = [leader.get("exe")] if leader else []
    paths += list(args.get("expect_exes") or [])
    cmd = args.get("expect_cmd")
    if cmd:
        prog = program(cmd)
        paths.append(prog.get("binary") or prog.get("interpreter"))
    return {os.path.realpath(os.path.expanduser(p)) for p in paths if p}


def not_ours(member: dict, pgid: int, since: float | None, exes: set) -> str | None:
    """Why a member of group pgid is not proven ours, or None when it is."""
    if member.get("uid") != os.getuid():
        return "belongs to uid %s" % member.get("uid")
    if member.get("sid") is not None and member["sid"] != pgid:
        return "is in session %s, not %d" % (member["sid"], pgid)
    if since is None or member.get("start") is None:
        return "has no start time to check"
    if float(member["start"]) < float(since) - START_TOLERANCE_S:
        return "started at %s, before ours (%s)" % (member["start"], since)
    exe = member.get("exe")
    if not exe or os.path.realpath(exe) not in exes:
        return "runs %s, not %s" % (exe, " or ".join(sorted(exes)) or "a program we know")
    return None


def describe(member: dict, why: str) -> str:
    return "pid %d (%s) %s" % (member["pid"], " ".join(member.get("cmdline") or [])[:80], why)


def wait_gone(refs: list, seconds: float) -> list:
    """Poll until none of refs (proc_info readings) still runs as itself, or the deadline passes; the survivors."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [r for r in refs if (now := proc_info(int(r["pid"]))) is not None and same_process(now, r)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Does any live process remain in group pgid?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_members(pgid))


def wait_group_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.05)
    return not group_alive(pgid)


def main(args: dict) -> dict:
    """Stop the process if it is still the expected one (see the module docstring)."""
    pid = int(args["pid"])
    grace = float(args.get("grace_s", 10))
    info = proc_info(pid)
    if info is None:
        if args.get("orphans") and args.get("expect_start") is not None and group_alive(pid):
            return stop_orphans(pid, float(args["expect_start"]), expected_exes(args), grace)
        return {"result": "gone", "detail": "pid %d is not running" % pid}
    why = mismatch(info, args)
    if why:
        return {"result": "mismatch", "detail": why, "found": info}
    try:  # a session leader (what `spawn` starts) owns its group; a shell's job leader shares it with its pipe
        group = os.getsid(pid) == pid and os.getpgid(pid) == pid and pid != os.getpgid(0)
    except ProcessLookupError:
        return {"result": "gone", "detail": "pid %d exited" % pid}
    if group:
        return stop_group(info, expected_exes(args, info), grace)
    return stop_one(info, grace)


def stop_one(info: dict, grace: float) -> dict:
    """TERM the process, KILL it after grace only while it is still the same process."""
    pid = info["pid"]
    try:
        if not signal_checked(info, signal.SIGTERM):
            return {"result": "gone", "detail": "pid %d exited" % pid}
    except PermissionError:
        return {"result": "not-permitted", "detail": "pid %d belongs to another user; not signalled" % pid}
    if not wait_gone([info], grace):
        return {"result": "stopped-term", "detail": "pid %d exited after SIGTERM" % pid}
    signal_checked(info, signal.SIGKILL)
    wait_gone([info], 5.0)
    return {"result": "stopped-kill",
            "detail": "pid %d did not exit within %ss of SIGTERM; sent SIGKILL" % (pid, grace)}


def stop_group(leader: dict, exes: set, grace: float) -> dict:
    """TERM the group of a live leader proven ours; after grace, KILL what is still proven ours."""
    pid = leader["pid"]
    seen = group_members(pid)  # the leader is proven ours and alive: so is everything in its group now
    try:
        os.killpg(pid, signal.SIGTERM)
    except PermissionError:
        return {"result": "not-permitted", "detail": "pid %d belongs to another user; not signalled" % pid}
    except ProcessLookupError:
        return {"result": "gone", "detail": "pid %d exited" % pid}
    if wait_group_gone(pid, grace):
        return {"result": "stopped-term", "detail": "pid %d (group) exited after SIGTERM" % pid}
    now = proc_info(pid)
    if now is not None and same_process(now, leader):  # the leader still runs: the group is still its own
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_group_gone(pid, 5.0)
        return {"result": "stopped-kill",
                "detail": "pid %d (group) did not exit within %ss of SIGTERM; sent SIGKILL" % (pid, grace)}
    return kill_proven(pid, leader["start"], exes, seen,
                       "pid %d (group) did not exit within %ss of SIGTERM" % (pid, grace))


def kill_proven(pgid: int, since: float | None, exes: set, seen: list, what: str) -> dict:
    """KILL each member of group pgid that is one of `seen` or proven ours; name the others, leave them running."""
    members = group_members(pgid)
    ours = [m for m in members if any(same_process(m, s) for s in seen) or not not_ours(m, pgid, since, exes)]
    left = [describe(m, not_ours(m, pgid, since, exes) or "") for m in members if m not in ours]
    for m in ours:
        signal_checked(m, signal.SIGKILL)
    wait_gone(ours, 5.0)
    if left:
        return {"result": "left-running", "detail": "%s; sent SIGKILL to what was ours; left running, not proven "
                "ours: %s" % (what, "; ".join(left))}
    return {"result": "stopped-kill", "detail": "%s; sent SIGKILL" % what}


def stop_orphans(pgid: int, since: float, exes: set, grace: float) -> dict:
    """The group of a gone session leader: stopped only when every member is proven ours."""
    members = group_members(pgid)
    foreign = [describe(m, why) for m in members if (why := not_ours(m, pgid, since, exes))]
    if foreign:
        return {"result": "refused", "detail": "pid %d is gone and its process group holds processes not proven "
                "ours: %s; nothing signalled (stop them yourself if they are exo's)" % (pgid, "; ".join(foreign))}
    for m in members:
        signal_checked(m, signal.SIGTERM)
    survivors = wait_gone(members, grace)
    if not survivors:
        return {"result": "stopped-term", "detail": "pid %d was gone; its process group (%d process(es) proven ours) "
                "exited after SIGTERM" % (pgid, len(members))}
    for m in survivors:
        signal_checked(m, signal.SIGKILL)
    wait_gone(survivors, 5.0)
    return {"result": "stopped-kill", "detail": "pid %d was gone; its process group did not exit within %ss of "
            "SIGTERM; sent SIGKILL" % (pgid, grace)}

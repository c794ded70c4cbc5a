"""Shared process helpers for the procs/spawn/stop probes (prepended to their payload; not a probe itself).

A process's identity is (pid, start, exe, cmdline), and `uid` says whose it is: `start` is its start time
in epoch seconds (Linux: boot time + /proc/<pid>/stat starttime; macOS: `ps -o lstart=`, whole seconds), \
so two readings of one
process agree within 1 s and a reused pid does not. `pgid` is its process group, `sid` its session (None where the
system does not say). `same_process(info, ref)` compares two readings; `signal_checked` signals a pid only while it is
still the process `ref` describes (on Linux through a pidfd opened before the check, so nothing else can take the pid
in between).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

START_TOLERANCE_S = 1.5


def _linux_btime() -> float:
    """Boot time in epoch seconds (/proc/stat btime)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def _linux_info(pid: int) -> dict | None:
    """proc_info from /proc (None for a zombie or a vanished pid)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        uid = os.stat("/proc/%d" % pid).st_uid
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    if rest[0] == "Z":
        return None
    start = _linux_btime() + int(rest[19]) / float(os.sysconf("SC_CLK_TCK"))
    try:
        exe = os.readlink("/proc/%d/exe" % pid)
    except OSError:
        exe = None
    return {"pid": pid, "ppid": int(rest[1]), "pgid": int(rest[2]), "sid": int(rest[3]), "uid": uid,
            "start": round(start, 2), "exe": exe, "cmdline": cmdline}


def _darwin_exe(pid: int) -> str | None:
    """The executable path from libproc proc_pidpath, or None."""
    try:
        import ctypes
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("proc") or "/usr/lib/libproc.dylib")
        buf = ctypes.create_string_buffer(4096)
        n = lib.proc_pidpath(pid, buf, 4096)
        return buf.value.decode("utf-8", "replace") if n > 0 else None
    except (OSError, AttributeError):
        return None


def _darwin_ps(pids: list | None) -> list:
    """proc_info rows from BSD ps (`lstart` parsed in the C locale); zombies skipped."""
    argv = ["/bin/ps", "-ww", "-o", "pid=,ppid=,pgid=,uid=,stat=,lstart=,command="]
    if pids:
        for p in pids:
            argv += ["-p", str(int(p))]
    else:
        argv.append("-ax")
    env = dict(os.environ, LC_ALL="C", LANG="C")
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, timeout=20,
                          check=False)
    out = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split(None, 10)
        if len(parts) < 10 or parts[4].startswith("Z"):
            continue
        try:
            start = time.mktime(time.strptime(" ".join(parts[5:10]), "%a %b %d %H:%M:%S %Y"))
        except ValueError:
            start = None
        pid = int(parts[0])
        cmd = parts[10] if len(parts) > 10 else ""
        out.append({"pid": pid, "ppid": int(parts[1]), "pgid": int(parts[2]), "sid": _sid(pid), "uid": int(parts[3]),
                    "start": start, "exe": _darwin_exe(pid), "cmdline": cmd.split(), "command": cmd})
    return out


def _sid(pid: int) -> int | None:
    """The session id of pid, or None when the system does not tell."""
    try:
        return os.getsid(pid)
    except OSError:
        return None


def proc_info(pid: int) -> dict | None:
    """{pid, ppid, pgid, sid, uid, start, exe, cmdline} of a live (non-zombie) process, or None."""
    if sys.platform.startswith("linux"):
        return _linux_info(pid)
    rows = _darwin_ps([pid])
    return rows[0] if rows else None


def all_procs() -> list:
    """proc_info of every process we can see."""
    if sys.platform.startswith("linux"):
        rows = (_linux_info(int(p)) for p in os.listdir("/proc") if p.isdigit())
        return [r for r in rows if r]
    return _darwin_ps(None)


def descendants(root: int) -> list:
    """proc_info of every live descendant of pid root (by parent links, read once)."""
    rows = all_procs()
    found, frontier = [], {root}
    while frontier:
        kids = [r for r in rows if r.get("ppid") in frontier]
        found += kids
        frontier = {r["pid"] for r in kids}
    return found


def group_members(pgid: int) -> list:
    """proc_info of every live process in process group pgid."""
    return [r for r in all_procs() if r.get("pgid") == pgid]


def same_process(info: dict, ref: dict) -> bool:
    """Is `info` (a fresh reading) the process `ref` describes: same pid, start within tolerance (the executable
    when either start is unknown)?"""
    if info.get("pid") != ref.get("pid"):
        return False
    if info.get("start") is not None and ref.get("start") is not None:
        return abs(float(info["start"]) - float(ref["start"])) <= START_TOLERANCE_S
    return bool(ref.get("exe")) and info.get("exe") == ref.get("exe")


def signal_checked(ref: dict, sig: int) -> bool:
    """Send sig to ref's pid only if that pid is still the process ref describes; True when sent. On Linux the
    pidfd is opened before the check, so the signal reaches exactly the process that was checked."""
    pid = int(ref["pid"])
    fd = None
    if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError:
            fd = None
    try:
        info = proc_info(pid)
        if info is None or not same_process(info, ref):
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if fd is not None:
            os.close(fd)

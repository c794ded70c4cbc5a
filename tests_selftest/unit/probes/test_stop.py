"""The `stop` probe's final SIGKILL is identity-checked: a pid (or a group member) that is no longer the process the
probe checked before its SIGTERM is never killed.

A fake process table stands in for the kernel (pid reuse cannot be forced on a real system in a test's time): the
probe module's view of processes and its signal calls are patched, and the table changes when the SIGTERM lands.
"""

from __future__ import annotations

import os
import signal

import pytest

from modeldrop.probes import _proc
from modeldrop.probes import stop as stop_probe

ME = os.getuid()


def proc(pid: int, start: float, exe: str, *, pgid: int | None = None, sid: int | None = None) -> dict:
    return {"pid": pid, "ppid": 1, "pgid": pgid or pid, "sid": sid or pid, "uid": ME, "start": start, "exe": exe,
            "cmdline": [exe]}


class Kernel:
    """A process table whose entries change when a signal arrives (`on_signal[(pid, sig)]`), and the signals sent."""

    def __init__(self, table: dict[int, dict], on_signal: dict[tuple[int, int], dict[int, dict | None]]):
        self.table, self.on_signal, self.sent = table, on_signal, []

    def info(self, pid: int) -> dict | None:
        row = self.table.get(pid)
        return dict(row) if row else None

    def deliver(self, target: int, sig: int, group: bool) -> None:
        pids = [p for p, r in self.table.items() if r["pgid"] == target] if group else [target]
        if not pids and sig:
            raise ProcessLookupError
        if sig == 0:
            return
        self.sent += [(p, sig) for p in pids]
        for change in [self.on_signal.get((p, sig), {}) for p in pids]:
            for p, row in change.items():
                if row is None:
                    self.table.pop(p, None)
                else:
                    self.table[p] = row

    def install(self, mp: pytest.MonkeyPatch, session_leader: int | None = None) -> None:
        for mod in (stop_probe, _proc):
            mp.setattr(mod, "proc_info", self.info)
        mp.setattr(stop_probe, "group_members", lambda g: [dict(r) for r in self.table.values() if r["pgid"] == g],
                   raising=False)
        mp.setattr(os, "kill", lambda pid, sig: self.deliver(pid, sig, False))
        mp.setattr(os, "killpg", lambda pg, sig: self.deliver(pg, sig, True))
        mp.setattr(os, "getsid", lambda pid: pid if pid == session_leader else 1)
        mp.setattr(os, "getpgid", lambda pid: pid)
        mp.delattr(os, "pidfd_open", raising=False)  # the check-then-kill path (macOS's) is the one under test


def test_a_pid_reused_after_sigterm_gets_no_sigkill(monkeypatch):
    """The process exits on SIGTERM and its pid is taken by another process at once: that one must not be killed."""
    kernel = Kernel({4000: proc(4000, 100.0, "/opt/exo/python")},
                    {(4000, signal.SIGTERM): {4000: proc(4000, 200.0, "/usr/bin/other")}})
    kernel.install(monkeypatch)
    res = stop_probe.main({"pid": 4000, "expect_start": 100.0, "grace_s": 0.3})
    assert (4000, signal.SIGKILL) not in kernel.sent, kernel.sent
    assert kernel.sent == [(4000, signal.SIGTERM)]
    assert res["result"] == "stopped-term", res


def test_a_lone_pid_that_ignores_sigterm_is_killed(monkeypatch):
    kernel = Kernel({4000: proc(4000, 100.0, "/opt/exo/python")}, {(4000, signal.SIGKILL): {4000: None}})
    kernel.install(monkeypatch)
    res = stop_probe.main({"pid": 4000, "expect_start": 100.0, "grace_s": 0.3})
    assert kernel.sent == [(4000, signal.SIGTERM), (4000, signal.SIGKILL)] and res["result"] == "stopped-kill"


def test_after_the_leader_is_gone_only_members_seen_with_it_or_proven_ours_get_sigkill(monkeypatch):
    """Group 5000: the leader exits on SIGTERM; its runner (seen in the group while the leader was checked) ignores
    SIGTERM; a third pid shows up in the group afterwards running another program: only the runner is killed."""
    runner = proc(5001, 101.0, "/opt/exo/python", pgid=5000, sid=5000)
    stranger = proc(5002, 150.0, "/usr/bin/sleep", pgid=5000, sid=5000)
    kernel = Kernel({5000: proc(5000, 100.0, "/opt/exo/python"), 5001: runner},
                    {(5000, signal.SIGTERM): {5000: None, 5002: stranger}, (5001, signal.SIGKILL): {5001: None}})
    kernel.install(monkeypatch, session_leader=5000)
    res = stop_probe.main({"pid": 5000, "expect_start": 100.0, "grace_s": 0.3})
    assert (5001, signal.SIGKILL) in kernel.sent and (5002, signal.SIGKILL) not in kernel.sent, kernel.sent
    assert res["result"] == "left-running" and "pid 5002 (/usr/bin/sleep) runs /usr/bin/sleep" in res["detail"], res

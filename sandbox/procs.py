"""Process and polling helpers shared by the sandbox: never stop anything by name.

Contract:
- `wait_until(probe, timeout, what)` polls `probe()` until it returns a truthy value and
  returns it; on the deadline it raises `TimeoutError` naming `what` and the last value seen.
- `pid_matches(pid, needles)` is True only when /proc/<pid>/cmdline exists and contains every
  needle: a pid file is trusted only after this check (pids get reused).
- `stop_pid(pid, needles, timeout)` sends SIGTERM (then SIGKILL after `timeout`) to exactly
  that pid when it still matches, and waits until it is gone (or a zombie). Returns True when
  it stopped a process, False when there was nothing matching to stop.
- `processes()` lists (pid, ppid, uid) from /proc; `descendants(pid, procs)` every process below
  one; `environ_has(pid, "K=V")` reads /proc/<pid>/environ (False when it cannot).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `probe` until truthy; raise TimeoutError with the last value seen at the deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = probe()
        except Exception as e:  # noqa: BLE001 - a failing probe is "not yet"; report it
            last = f"{type(e).__name__}: {e}"
            value = None
        else:
            value = last
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def cmdline(pid: int) -> str | None:
    """The process's command line with NULs as spaces, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def is_zombie(pid: int) -> bool:
    """True when the process exists but has exited (state Z) or does not exist at all."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def pid_matches(pid: int | None, needles: Iterable[str]) -> bool:
    """True when `pid` is a live process whose cmdline contains every needle."""
    if not pid or pid <= 1:
        return False
    line = cmdline(pid)
    return line is not None and not is_zombie(pid) and all(n in line for n in needles)


def read_pid(path: Path) -> int | None:
    """The integer in a pid file, or None when absent or unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _reap(pid: int) -> None:
    """Collect our own child's exit status if it is our child (no effect otherwise)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_pid(pid: int | None, needles: Iterable[str], timeout: float = 5.0) -> bool:
    """TERM, then KILL, exactly `pid` if it still matches `needles`; wait until it is gone."""
    needles = list(needles)
    if not pid or not pid_matches(pid, needles):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        try:
            wait_until(lambda: (_reap(pid), is_zombie(pid))[1], wait, f"pid {pid} to exit after {sig.name}")
            _reap(pid)
            return True
        except TimeoutError:
            continue
    raise RuntimeError(f"pid {pid} ({cmdline(pid)}) survived SIGKILL")


def processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, uid) of every process."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            uid = (d / "status").read_text().split("\nUid:")[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
        out.append((int(d.name), int(stat.rsplit(")", 1)[1].split()[1]), int(uid)))
    return out


def descendants(root_pid: int, procs: list[tuple[int, int, int]]) -> list[int]:
    """Every process below `root_pid` in `procs` (children first, then theirs)."""
    kids: dict[int, list[int]] = {}
    for pid, ppid, _ in procs:
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root_pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def environ_has(pid: int, needle: str) -> bool:
    """True when `needle` (`K=V`) is one entry of the process's environment."""
    try:
        return needle.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False

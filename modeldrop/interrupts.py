"""SIGTERM treated as Ctrl-C, and a cleanup that a second Ctrl-C cannot cut short.

Contract:
- `install(note)`: the first SIGINT or SIGTERM raises KeyboardInterrupt in the main thread (SIGTERM's as
  `KeyboardInterrupt("SIGTERM")`, so a run stopped by `kill` or a CI cancel unwinds like Ctrl-C: fixture
  teardown, the cleanup drain, the ledger's run end); from then on, further ones are not raised but passed to
  `note(signal name)` (e.g. "second Ctrl-C ignored while cleaning up"), switched in the handler itself so a
  second signal close behind the first cannot escape; every cleanup step has its own deadline, so the run still
  ends. Returns a restore function.
- `interrupt_reason(exc)` says which it was: "interrupted (SIGTERM)" or "interrupted (Ctrl-C)".
Only the main thread can install handlers; elsewhere these do nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install(note: Callable[[str], None]) -> Callable[[], None]:
    """The first SIGINT or SIGTERM raises KeyboardInterrupt (SIGTERM's with the argument "SIGTERM"); from that
    moment, in the handler itself, every further one goes to note(signal name) instead: no second signal can
    cut the unwinding short, however soon it comes. Returns the function that restores the previous handlers."""
    if not _main_thread():
        return lambda: None
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if seen:
            note(signal.Signals(signum).name)
            return
        seen.append(signum)
        raise KeyboardInterrupt("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()

    for s, h in saved.items():
        if h is not signal.SIG_IGN:  # a signal the parent ignores (a background job's SIGINT) stays ignored
            signal.signal(s, handler)

    def restore() -> None:
        for s, h in saved.items():
            signal.signal(s, h)
    return restore


def interrupt_reason(exc: BaseException | None) -> str:
    """'interrupted (SIGTERM)' for the SIGTERM KeyboardInterrupt, else 'interrupted (Ctrl-C)'."""
    return "interrupted (SIGTERM)" if exc is not None and exc.args[:1] == ("SIGTERM",) else "interrupted (Ctrl-C)"

"""SIGTERM treated as Ctrl-C, and a cleanup that a second Ctrl-C cannot cut short.

Contract:
- `install_sigterm()` makes SIGTERM raise `KeyboardInterrupt("SIGTERM")` in the main thread, so a run
  stopped by `kill` or a CI cancel unwinds like Ctrl-C (fixture teardown, the cleanup drain, the ledger's
  run end). Returns a function that restores the previous handler.
- `shield(note)`: from the first interrupt on, further SIGINT/SIGTERM are not raised but passed to
  `note(signal name)` (e.g. "second Ctrl-C ignored while cleaning up"); every cleanup step has its own
  deadline, so the run still ends. Returns a restore function.
- `interrupt_reason(exc)` says which it was: "interrupted (SIGTERM)" or "interrupted (Ctrl-C)".
Only the main thread can install handlers; elsewhere these do nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def install_sigterm() -> Callable[[], None]:
    """SIGTERM -> KeyboardInterrupt("SIGTERM"); returns the restore function."""
    if not _main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def shield(note: Callable[[str], None]) -> Callable[[], None]:
    """Further SIGINT/SIGTERM go to note(name) instead of raising; returns the restore function."""
    if not _main_thread():
        return lambda: None
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def ignore(signum: int, frame: object) -> None:
        note(signal.Signals(signum).name)

    for s in saved:
        signal.signal(s, ignore)

    def restore() -> None:
        for s, h in saved.items():
            signal.signal(s, h)
    return restore


def interrupt_reason(exc: BaseException | None) -> str:
    """'interrupted (SIGTERM)' for the SIGTERM KeyboardInterrupt, else 'interrupted (Ctrl-C)'."""
    return "interrupted (SIGTERM)" if exc is not None and exc.args[:1] == ("SIGTERM",) else "interrupted (Ctrl-C)"

"""NEW exo's PID file: ``<cache>/exo.pid`` held with an exclusive flock for the process lifetime.

Contract: ``take(path)`` returns the open file (keep it referenced) or raises ``PidfileError``
whose ``str()`` is exo's ``PidfileError("daemon already running with PID N")`` text.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class PidfileError(Exception):
    def __str__(self) -> str:
        return f'PidfileError("{self.args[0]}")'


def take(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "r+")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = f.read().strip() or "unknown"
        f.close()
        raise PidfileError(f"daemon already running with PID {other}") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f

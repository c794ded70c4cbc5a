"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Temp file in the same directory, flushed and fsynced, then `os.replace`. Every result the suite
keeps (run folder, pass cache, bench checkpoints, model profiles) is written through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by whoever takes over
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any, indent: int = 2) -> None:
    """Write `obj` as JSON to `path` atomically (non-JSON values as str)."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")

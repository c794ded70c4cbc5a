"""The self-tests' own per-user dirs: XDG_DATA_HOME and XDG_CONFIG_HOME point into one temp dir per session, so no
run, profile or last-run pointer of a self-test lands in the real user's dirs (modeldrop.statedirs)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

KEYS = ("XDG_DATA_HOME", "XDG_CONFIG_HOME")


def isolate() -> Path:
    """Point the XDG dirs at a fresh temp dir (inherited by xdist workers and every run started); returns it."""
    root = Path(tempfile.mkdtemp(prefix="modeldrop-selftest-user-"))
    for key in KEYS:
        os.environ[key] = str(root / key.lower())
    return root


def remove(root: Path) -> None:
    """Delete what `isolate` made."""
    shutil.rmtree(root, ignore_errors=True)

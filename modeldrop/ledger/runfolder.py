"""The run folder of one run: `reports/<UTC yyyymmddTHHMMSSZ>-<org--name>/`.

Contract:
- `RunFolder.create(report_dir, model_id)` makes the folder with its sub-folders (`manifests/`,
  `logs/`, `exo/`, `bench/`, `plots/`) and points `<report_dir>/latest` at it (symlink replaced
  atomically). Two runs started in the same second get distinct folders (`…-2`).
- `write_text` / `write_json` write atomically (temp file in the same directory, then `os.replace`),
  so a reader never sees a half-written file, even after SIGKILL.
- `run_id` is the folder name; it is what the ledger and the pass cache call the run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldrop import atomic

SUBDIRS = ("manifests", "logs", "exo", "bench", "plots")
LATEST = "latest"
# names a file the plugin writes the run folder path into (how `model-drop` learns where a run went)
RUN_FOLDER_FILE_ENV = "MODELDROP_RUN_FOLDER_FILE"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (see modeldrop.atomic)."""
    atomic.write_text(path, text)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic.write_json(path, obj)


def utc_stamp(t: float | None = None) -> str:
    """`yyyymmddTHHMMSSZ` in UTC for epoch time `t` (now by default)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if t is None else t))


def update_latest(report_dir: Path, target: Path) -> None:
    """Point `<report_dir>/latest` at `target` (relative symlink), replacing it atomically."""
    link = report_dir / LATEST
    tmp = report_dir / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target.name, tmp)
    os.replace(tmp, link)


def resolve_latest(report_dir: Path) -> Path | None:
    """The run folder `<report_dir>/latest` points at, or None."""
    link = report_dir / LATEST
    if not link.exists():
        return None
    return link.resolve()


@dataclass(frozen=True)
class RunFolder:
    """One run's folder. `path` is absolute; `run_id` is its name."""

    path: Path

    @property
    def run_id(self) -> str:
        """The run's id: the folder name, e.g. `20261127T140211Z-org--name`."""
        return self.path.name

    @classmethod
    def create(cls, report_dir: Path, model_folder: str, t: float | None = None) -> RunFolder:
        """Create a fresh run folder under `report_dir` and update `latest`."""
        report_dir = report_dir.expanduser().resolve()
        report_dir.mkdir(parents=True, exist_ok=True)
        base = f"{utc_stamp(t)}-{model_folder}"
        for i in range(1, 1000):
            path = report_dir / (base if i == 1 else f"{base}-{i}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"{report_dir}: cannot create a run folder for {base}")
        for sub in SUBDIRS:
            (path / sub).mkdir()
        update_latest(report_dir, path)
        return cls(path)

    @property
    def manifests(self) -> Path:
        return self.path / "manifests"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def exo(self) -> Path:
        return self.path / "exo"

    @property
    def bench(self) -> Path:
        return self.path / "bench"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def report_dir(self) -> Path:
        """The reports directory that holds this run folder (and `latest`, `pass_cache.json`)."""
        return self.path.parent

    def file(self, rel: str) -> Path:
        """Absolute path of `rel` inside the run folder; `..` and absolute paths are refused."""
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"run folder paths must be relative and inside the folder: {rel!r}")
        return self.path / p

    def write_text(self, rel: str, s: str) -> Path:
        """Write text to `rel` atomically; returns the absolute path."""
        target = self.file(rel)
        atomic_write_text(target, s)
        return target

    def write_json(self, rel: str, obj: Any) -> Path:
        """Write `obj` as JSON to `rel` atomically; returns the absolute path."""
        target = self.file(rel)
        atomic_write_json(target, obj)
        return target

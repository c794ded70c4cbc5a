"""exo's directories and model dirs.

Contract: every path follows the node's ``layout`` (``macos``: ``~/.exo`` for all three homes;
``linux``: XDG) unless ``EXO_HOME`` overrides; models dirs come from the env exactly as exo reads
them, read-only dirs first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExoPaths:
    config_home: Path
    data_home: Path
    cache_home: Path

    @property
    def log_dir(self) -> Path:
        return self.cache_home / "exo_log"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "exo.log"

    @property
    def runner_log_dir(self) -> Path:
        return self.log_dir / "runner_log"

    @property
    def pid_file(self) -> Path:
        return self.cache_home / "exo.pid"

    @property
    def first_run_marker(self) -> Path:
        return self.config_home / ".dashboard_opened"

    @property
    def custom_cards_dir(self) -> Path:
        return self.data_home / "custom_model_cards"

    @property
    def event_log_dir(self) -> Path:
        return self.data_home / "event_log"


def exo_paths(layout: str) -> ExoPaths:
    """Resolve config/data/cache homes for ``layout`` from the current environment."""
    home = Path.home()
    exo_home = os.environ.get("EXO_HOME")
    if exo_home:
        root = home / exo_home
        return ExoPaths(root, root, root)
    if layout != "linux":
        root = home / ".exo"
        return ExoPaths(root, root, root)

    def xdg(var: str, default: str) -> Path:
        return Path(os.environ.get(var) or str(home / default)) / "exo"

    return ExoPaths(xdg("XDG_CONFIG_HOME", ".config"), xdg("XDG_DATA_HOME", ".local/share"),
                    xdg("XDG_CACHE_HOME", ".cache"))


@dataclass(frozen=True)
class ModelDir:
    path: Path
    read_only: bool


def _split(value: str | None) -> list[Path]:
    return [Path(os.path.expanduser(p)) for p in (value or "").split(":") if p]


def models_dirs(paths: ExoPaths) -> list[ModelDir]:
    """Search order: read-only dirs, then default writable, then EXO_MODELS_DIRS."""
    read_only = _split(os.environ.get("EXO_MODELS_READ_ONLY_DIRS"))
    default = os.environ.get("EXO_DEFAULT_MODELS_DIR")
    default_dir = Path(os.path.expanduser(default)) if default else paths.data_home / "models"
    writable = [default_dir, *_split(os.environ.get("EXO_MODELS_DIRS"))]
    ro_set = {str(p) for p in read_only}
    out = [ModelDir(p, True) for p in read_only]
    out += [ModelDir(p, str(p) in ro_set) for p in writable if str(p) not in ro_set]
    return out


def default_models_dir(paths: ExoPaths) -> Path:
    default = os.environ.get("EXO_DEFAULT_MODELS_DIR")
    return Path(os.path.expanduser(default)) if default else paths.data_home / "models"

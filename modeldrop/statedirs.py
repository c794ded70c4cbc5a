"""Where modeldrop keeps what it writes, outside its code, and which suite it runs.

Contract:
- `suite_root()`: the suite this modeldrop runs. A checkout (a source or editable install: the package's parent
  holds gates/, conftest.py and pyproject.toml) runs its own top level; an install from a wheel runs the copy the
  wheel carries, `modeldrop/suite/` (setup.py maps the top level there). `is_installed_suite(rootdir)` tells a
  pytest rootdir that is that copy.
- Run folders: `reports/` (relative to where pytest runs) when the suite is a checkout's, else `<data dir>/reports`;
  RUN_REPORT_DIR (or --report-dir) wins over both. The data and config dirs are the user's (platformdirs:
  ~/Library/Application Support/modeldrop on macOS, $XDG_DATA_HOME/modeldrop and $XDG_CONFIG_HOME/modeldrop on
  Linux).
- Profiles (`ProfileFiles`): the file a run writes is PROFILE_PATH when set, else `<config dir>/model_profiles.json`.
  A checkout's tracked `model_profiles.json` is the seed table: read for a model the user's file has no row for,
  written only by --update-profile of its own row (a PROFILE_PATH naming it counts as unset).
- `record_last_run` / `last_run`: the newest run folder of this user wherever it went (`<data dir>/last_run`), so
  `model-drop-latest` finds the sandbox demo's runs as well as its own.
- Nothing here writes inside the installed package; a dir that cannot be made is an InputError naming it and the
  fix (the plugin turns it into exit 4 before any node is touched).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from modeldrop import atomic
from modeldrop.errors import InputError

APP = "modeldrop"
PROFILES_FILE = "model_profiles.json"
LAST_RUN_FILE = "last_run"
PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_SUITE = PACKAGE_DIR / "suite"
SUITE_DIRS = ("gates", "fixtures", "benchmarks")


def data_dir() -> Path:
    """The user's data dir for modeldrop (run folders, the last-run pointer)."""
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def config_dir() -> Path:
    """The user's config dir for modeldrop (the profile file)."""
    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def is_checkout(root: Path) -> bool:
    """`root` is a modeldrop checkout: the suite's top level beside a modeldrop package and a pyproject.toml."""
    return ((root / "gates").is_dir() and (root / "conftest.py").is_file() and (root / "pyproject.toml").is_file()
            and (root / "modeldrop" / "__init__.py").is_file())


def own_checkout() -> Path | None:
    """The checkout this modeldrop package was imported from, or None for an install from a wheel."""
    return PACKAGE_DIR.parent if is_checkout(PACKAGE_DIR.parent) else None


def suite_root() -> Path:
    """The directory holding the gates/, benchmarks/ and conftest.py this modeldrop runs (see module doc)."""
    root = own_checkout()
    if root is not None:
        return root
    if (INSTALLED_SUITE / "conftest.py").is_file() and (INSTALLED_SUITE / "gates").is_dir():
        return INSTALLED_SUITE
    raise InputError(f"modeldrop at {PACKAGE_DIR} carries no suite (no {INSTALLED_SUITE.name}/ and no checkout "
                     "around it); reinstall it from a wheel built from the repo (README: Using it on a real cluster)")


def is_installed_suite(rootdir: Path) -> bool:
    """A pytest rootdir that is (or lies in) the suite the wheel installed, not a checkout."""
    rootdir = rootdir.resolve()
    return rootdir == INSTALLED_SUITE or INSTALLED_SUITE in rootdir.parents


def default_report_dir(checkout: Path | None) -> Path:
    """Run folders when RUN_REPORT_DIR is unset: `reports` (relative) for a checkout, else the user's data dir."""
    return Path("reports") if checkout is not None else data_dir() / "reports"


@dataclass(frozen=True)
class ProfileFiles:
    """The profile tables of a run: `path` is read first and written; `seed` (a checkout's tracked table) is read
    for a model `path` has no row for, and written only by --update-profile of its own row."""

    path: Path
    seed: Path | None = None
    default: bool = False  # `path` is the per-user default (PROFILE_PATH unset)


def profile_files(given: str | None, checkout: Path | None) -> ProfileFiles:
    """The profile files for PROFILE_PATH `given` (None or "" = unset) and the suite's checkout (None = installed)."""
    seed = checkout / PROFILES_FILE if checkout is not None else None
    if given:
        path = Path(given).expanduser()
        if seed is None or path.absolute() != seed.absolute():
            return ProfileFiles(path)
    return ProfileFiles(config_dir() / PROFILES_FILE, seed, default=True)


def check_profile_folder(files: ProfileFiles, where: str) -> None:
    """The folder of the profile file a run writes exists (the per-user one is created); InputError otherwise."""
    folder = files.path.parent
    if files.default:
        writable_dir(folder, f"{where}: the per-user config dir",
                     "set PROFILE_PATH (or --profile-path) to a file in a folder you can write")
        return
    if not folder.is_dir():
        raise InputError(f"{where}: {files.path}: folder {folder} does not exist; create it (mkdir -p {folder}) or "
                         "set PROFILE_PATH to a file in an existing folder")
    if files.path.is_dir():
        raise InputError(f"{where}: {files.path} is a folder; set PROFILE_PATH to a file, e.g. "
                         f"{files.path / PROFILES_FILE}")


def writable_dir(path: Path, what: str, fix: str) -> Path:
    """Create `path` (and parents) if needed and check it can be written; InputError naming it and `fix` if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{what} {path} cannot be created ({e.strerror or e}); {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path} is not writable; {fix}")
    return path


def record_last_run(folder: Path) -> str | None:
    """Point `<data dir>/last_run` at run folder `folder`; a warning line when it cannot be written, else None."""
    pointer = data_dir() / LAST_RUN_FILE
    try:
        atomic.write_text(pointer, f"{Path(folder).resolve()}\n")
    except OSError as e:
        return f"could not record the last run in {pointer}: {e.strerror or e} (model-drop-latest will not find it)"
    return None


def last_run() -> Path | None:
    """The newest run folder of this user (see `record_last_run`), or None when none is recorded or it is gone."""
    try:
        text = (data_dir() / LAST_RUN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    folder = Path(text) if text else None
    return folder if folder is not None and folder.is_absolute() and folder.is_dir() else None

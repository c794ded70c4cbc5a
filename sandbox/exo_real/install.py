"""The real-EXO install the sandbox's nodes run: EXO's own source from a snapshot, on Python 3.13.

Contract: `ensure_install(generation)` returns an `Install` (venv python, EXO's source tree, the
LD_LIBRARY_PATH its interpreter needs) under `/opt/modeldrop-sandbox/exo-real-<generation>/`,
world-readable (node users cannot reach /root):
- a copy of a Python 3.13 at `/opt/modeldrop-sandbox/python3.13` (pyenv builds link a shared
  libpython, so the copy runs with `LD_LIBRARY_PATH=<copy>/lib`);
- the snapshot unpacked in its own layout (`exo/src`, `exo/resources`, `exo/dashboard/build/index.html`:
  EXO finds resources and dashboard by walking up from its source);
- a venv with the generation's pinned requirements (PyPI only), the mlx-lm fork with --no-deps (NEW),
  a dist-info for `exo` and a .pth putting EXO's `src/` on the path.
It is reused while its marker records the same input hash (snapshot, requirements, Python, recipe);
a file lock serialises concurrent builders; a failed build leaves no marker, so nothing half-built
looks healthy. `missing_inputs(generation)` names what this machine lacks (empty when buildable).
Every failure is an `InstallError` whose message is one line naming what is missing or what failed
and how to rebuild.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.nodevenv import open_up

BASE = Path(os.environ.get("MODELDROP_EXO_REAL_BASE", "/opt/modeldrop-sandbox"))
# The snapshots sit in shared/exo-real beside the checkout (MODELDROP_EXO_SNAPSHOTS moves them).
SNAPSHOTS = Path(os.environ.get("MODELDROP_EXO_SNAPSHOTS",
                                Path(__file__).resolve().parents[2].parent / "shared" / "exo-real"))
PYTHON_CANDIDATES = ("/root/.pyenv/versions/3.13.0", "/usr/local/python3.13", "/opt/python3.13")
RECIPE = "3"  # bump when the build steps change
MARKER = ".modeldrop-exo-real.json"
REBUILD_HINT = "rebuild with `python -m sandbox.exo_real build --force`"


class InstallError(RuntimeError):
    """The real-EXO install is missing or broken; the message is one line saying what and how to rebuild."""


@dataclass(frozen=True)
class Recipe:
    """What one generation's install is made of."""

    generation: str
    tarball: str
    version: str
    requirements: tuple[str, ...]
    no_deps: tuple[str, ...] = ()
    extension: str = "exo_rs"


def _new_requirements() -> tuple[str, ...]:
    lines = (SNAPSHOTS / "exo-b5375f8.requirements.txt").read_text().split()
    return ("mlx==0.32.0", "mlx-cpu==0.32.0", *[x for x in lines if x and not x.startswith("#")])


# v1.0.71: its uv.lock pins, PyPI only. Its Linux `cpu` extra pins mlx 0.31.1, but the mlx-lm 0.31.3 it pins
# calls `mx.new_thread_local_stream`, which 0.31.1 lacks (every runner fails); 0.31.2, its macOS pin, has it.
OLD_REQUIREMENTS = ("mlx==0.31.2", "mlx-cpu==0.31.2", "mlx-lm==0.31.3", "aiofiles==25.1.0", "aiohttp==3.13.3",
                    "types-aiofiles==25.1.0.20251011", "pydantic==2.12.5", "fastapi==0.128.0", "filelock==3.20.3",
                    "rustworkx==0.17.1", "huggingface-hub==1.8.0", "psutil==7.2.1", "loguru==0.7.3", "anyio==4.11.0",
                    "tiktoken==0.12.0", "hypercorn==0.18.0", "openai-harmony==0.0.8", "httpx==0.28.1",
                    "tomlkit==0.14.0", "python-multipart==0.0.21", "msgspec==0.20.0", "zstandard==0.25.0",
                    "transformers==5.2.0", "mlx-vlm==0.4.4")


def recipe(generation: str) -> Recipe:
    """The recipe of `generation` (new = EXO HEAD b5375f8, old = v1.0.71)."""
    if generation == "new":
        return Recipe("new", "exo-b5375f8.tar.gz", "0.3.70", _new_requirements(), ("mlx-lm-6a3df6c.tar.gz",))
    if generation == "old":
        return Recipe("old", "exo-v1.0.71.tar.gz", "1.0.71", OLD_REQUIREMENTS, extension="exo_pyo3_bindings")
    raise InstallError(f"generation must be new or old, got {generation!r}")


@dataclass(frozen=True)
class Install:
    """A built install: run `python` with `env` (LD_LIBRARY_PATH) and EXO's source at `source`."""

    generation: str
    root: Path
    python: Path
    source: Path
    lib_dir: Path
    built_s: float | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"LD_LIBRARY_PATH": str(self.lib_dir)}


def find_python313() -> Path | None:
    """A Python 3.13 prefix (bin/python3.13 inside): MODELDROP_PYTHON313, else the known places."""
    for cand in [os.environ.get("MODELDROP_PYTHON313", ""), *PYTHON_CANDIDATES]:
        if cand and (Path(cand) / "bin/python3.13").is_file():
            return Path(cand)
    return None


def missing_inputs(generation: str) -> list[str]:
    """What this machine lacks to build `generation` (empty: buildable)."""
    out = []
    try:
        r = recipe(generation)
    except (OSError, InstallError):
        return [f"the EXO snapshot folder {SNAPSHOTS} (exo-b5375f8.requirements.txt)"]
    for name in (r.tarball, *r.no_deps):
        if not (SNAPSHOTS / name).is_file():
            out.append(f"{SNAPSHOTS / name}")
    if find_python313() is None:
        out.append("a Python 3.13 (set MODELDROP_PYTHON313 to its prefix)")
    return out


def input_hash(generation: str, python: Path) -> str:
    """A hash of everything the install is built from."""
    r = recipe(generation)
    h = hashlib.sha256(f"{RECIPE}\n{python}\n{r}\n".encode())
    for name in (r.tarball, *r.no_deps):
        h.update(hashlib.sha256((SNAPSHOTS / name).read_bytes()).digest())
    h.update((python / "bin/python3.13").read_bytes()[:65536])
    return h.hexdigest()[:16]


def _paths(generation: str) -> tuple[Path, Path, Path]:
    root = BASE / f"exo-real-{generation}"
    return root, root / "venv", root / "exo"


def build_seconds(generation: str) -> float | None:
    """How long the cached install took to build (from its marker), or None."""
    try:
        return json.loads((_paths(generation)[0] / MARKER).read_text()).get("build_s")
    except (OSError, ValueError):
        return None


def current(generation: str) -> Install | None:
    """The install when its marker matches today's inputs and its parts are there, else None."""
    root, venv, src = _paths(generation)
    python = find_python313()
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if python is None or missing_inputs(generation):
        return None
    ok = (marker.get("hash") == input_hash(generation, python) and (venv / "bin/python").exists()
          and (src / "src/exo/main.py").is_file() and (BASE / "python3.13/lib").is_dir())
    return Install(generation, root, venv / "bin/python", src, BASE / "python3.13/lib") if ok else None


def ensure_install(generation: str, force: bool = False, timeout: float = 1800.0) -> Install:
    """Build (or reuse) the install of `generation`; see the module docstring."""
    if not force and (inst := current(generation)):
        return inst
    missing = missing_inputs(generation)
    if missing:
        raise InstallError(f"real EXO ({generation}) cannot be built here: missing {'; '.join(missing)}")
    BASE.mkdir(parents=True, exist_ok=True)
    open_up(BASE)
    with open(BASE / f".exo-real-{generation}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (inst := current(generation)):
            return inst
        t0 = time.monotonic()
        _build(generation, timeout, t0)
        built = time.monotonic() - t0
    inst = current(generation)
    if inst is None:
        raise InstallError(f"real EXO ({generation}) was built but does not check out; {REBUILD_HINT}")
    return Install(inst.generation, inst.root, inst.python, inst.source, inst.lib_dir, built)


def _build(generation: str, timeout: float, t0: float) -> None:
    """Every step from scratch; the marker is written last."""
    r = recipe(generation)
    python = find_python313()
    assert python is not None
    root, venv, src = _paths(generation)
    (root / MARKER).unlink(missing_ok=True)
    pylib = _copy_python(python)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    _unpack(SNAPSHOTS / r.tarball, src)
    env = {**os.environ, "LD_LIBRARY_PATH": str(pylib)}
    _step([str(BASE / "python3.13/bin/python3.13"), "-m", "venv", str(venv)], env, 300, "create the venv")
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _step([*pip, *r.requirements], env, timeout, "install the pinned requirements")
    for name in r.no_deps:
        _step([*pip, "--no-deps", str(SNAPSHOTS / name)], env, 600, f"install {name}")
    _register_exo(venv, src, r.version)
    open_up(root)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | (0o005 if p.is_dir() else 0o004))
    (root / MARKER).write_text(json.dumps({"hash": input_hash(generation, python), "python": str(python),
                                           "requirements": list(r.requirements),
                                           "build_s": round(time.monotonic() - t0, 1)}) + "\n")


def _copy_python(python: Path) -> Path:
    """Copy the 3.13 prefix to BASE/python3.13 (once per source); returns its lib dir."""
    dest = BASE / "python3.13"
    stamp = dest / ".modeldrop-source"
    if not (stamp.exists() and stamp.read_text() == str(python)):
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(python, dest, symlinks=True)
        stamp.write_text(str(python))
        open_up(dest)
        for dirpath, dirs, files in os.walk(dest):
            for name in dirs + files:
                p = Path(dirpath) / name
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | (0o005 if p.is_dir() or os.access(p, os.X_OK) else 0o004))
    return dest / "lib"


def _unpack(tarball: Path, dest: Path) -> None:
    """The snapshot's top folder becomes `dest`; plus the dashboard's index.html EXO's API mounts."""
    tmp = dest.with_name(".unpack")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp, filter="data")
    (top,) = list(tmp.iterdir())
    os.replace(top, dest)
    tmp.rmdir()
    build = dest / "dashboard/build"
    build.mkdir(parents=True, exist_ok=True)
    (build / "index.html").write_text("<!doctype html><title>EXO</title><p>dashboard not built (sandbox)</p>\n")


def _register_exo(venv: Path, src: Path, version: str) -> None:
    """A dist-info named `exo` (EXO reads its version from it) and a .pth for EXO's src/."""
    site = next(venv.glob("lib/python3.13/site-packages"))
    info = site / f"exo-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: exo\nVersion: {version}\n")
    (info / "INSTALLER").write_text("modeldrop-sandbox\n")
    (info / "RECORD").write_text("")
    (info / "entry_points.txt").write_text("[console_scripts]\nexo = exo.main:main\n")
    (site / "exo-src.pth").write_text(f"{src / 'src'}\n")


def _step(argv: list[str], env: dict[str, str], timeout: float, what: str) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, umask=0o022)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InstallError(f"real EXO build could not {what}: {type(e).__name__}: {e}; {REBUILD_HINT}") from None
    if r.returncode != 0:
        tail = " | ".join(x for x in (r.stdout + r.stderr).strip().splitlines()[-3:] if x)
        raise InstallError(f"real EXO build could not {what} (exit {r.returncode}): {tail[-400:]}; {REBUILD_HINT}")


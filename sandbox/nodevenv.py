"""The node venv: the Python that the sandbox's node users run `hf` and the EXO emulator with.

Contract: `ensure_node_venv(venv_dir, requirements)` returns `venv_dir` holding a venv made
from Debian's `/usr/bin/python3` (node users cannot reach the project venv under /root) with
`requirements` installed, world-readable. It is reused when its marker file records the same
requirements hash; otherwise it is rebuilt. A file lock beside it serialises concurrent
builders (pytest-xdist workers). Raises RuntimeError with pip's output tail on failure.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

DEFAULT_VENV = Path("/opt/modeldrop-sandbox/venv")
BASE_PYTHON = "/usr/bin/python3"
# mlx-lm alone installs no mlx on Linux: the [cpu] extra brings mlx + mlx-cpu.
NODE_REQUIREMENTS: tuple[str, ...] = ("huggingface_hub==2.4.0", "mlx-lm[cpu]==0.32.2")
MARKER = ".modeldrop-requirements.json"


def requirements_hash(requirements: tuple[str, ...] | list[str], base_python: str = BASE_PYTHON) -> str:
    """A hash of the base interpreter and the requirement lines."""
    text = "\n".join([base_python, *sorted(requirements)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def venv_is_current(venv_dir: Path, requirements: tuple[str, ...] | list[str]) -> bool:
    """True when the marker matches and the interpreter and hf are there."""
    try:
        marker = json.loads((venv_dir / MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return (marker.get("hash") == requirements_hash(requirements)
            and (venv_dir / "bin" / "python").exists() and (venv_dir / "bin" / "hf").exists())


def _run(argv: list[str], timeout: float) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, umask=0o022)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")


def open_up(path: Path) -> None:
    """Make `path` and every parent traversable by others (o+rx on dirs we own)."""
    for p in [path, *path.parents]:
        if p == Path("/"):
            break
        st = p.stat()
        if st.st_uid == os.geteuid() and (st.st_mode & 0o005) != 0o005:
            p.chmod(st.st_mode | 0o005)


def ensure_node_venv(venv_dir: Path = DEFAULT_VENV, requirements: tuple[str, ...] | list[str] = NODE_REQUIREMENTS,
                     timeout: float = 900.0) -> Path:
    """Build (or reuse) the node venv; see the module docstring."""
    venv_dir = Path(venv_dir)
    if venv_is_current(venv_dir, requirements):
        return venv_dir
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    open_up(venv_dir.parent)
    with open(venv_dir.parent / f".{venv_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if venv_is_current(venv_dir, requirements):
            return venv_dir
        shutil.rmtree(venv_dir, ignore_errors=True)
        _run([BASE_PYTHON, "-m", "venv", str(venv_dir)], 120)
        _run([str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements], timeout)
        (venv_dir / MARKER).write_text(json.dumps({"hash": requirements_hash(requirements),
                                                    "requirements": list(requirements)}) + "\n")
        open_up(venv_dir)
    return venv_dir

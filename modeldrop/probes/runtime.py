"""Probe `runtime`: {exo_cmd} -> the MLX and Python that exo at exo_cmd runs with, found beside its install.

Result: {exo_realpath, interpreter, mlx, python, where}. MLX's version comes from the `mlx-<version>.dist-info` in the
site-packages (or PyInstaller `_internal`) of exo's environment, searched from the real path of exo_cmd
up to five directories, then from its `#!` interpreter's (a console script in a venv); Python's from that
environment's `lib/pythonX.Y` or the interpreter's name.
Unknown values are None (an app bundle that hides them is not an error).
"""

from __future__ import annotations

import glob
import os
import re

PATTERNS = ("lib/python3*/site-packages/mlx-*.dist-info", "_internal/mlx-*.dist-info",
            "*/lib/python3*/site-packages/mlx-*.dist-info", "Resources/*/_internal/mlx-*.dist-info")


def shebang(path: str):
    """The interpreter path of a `#!` script, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(300).decode("utf-8", "replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    if not head.startswith("#!"):
        return None
    parts = head[2:].strip().split()
    if parts and os.path.basename(parts[0]) == "env" and len(parts) > 1:
        return None
    return parts[0] if parts else None


def find_mlx(start: str):
    """The first mlx dist-info in start or up to four of its parents, else None."""
    d = start
    for _ in range(5):
        for pat in PATTERNS:
            hits = sorted(glob.glob(os.path.join(glob.escape(d), pat)))
            if hits:
                return hits[0]
        if os.path.dirname(d) == d:
            return None
        d = os.path.dirname(d)
    return None


def main(args: dict) -> dict:
    """Look for MLX's dist-info around exo's real path, then around the interpreter of its `#!` line."""
    exe = os.path.expanduser(args["exo_cmd"])
    real = os.path.realpath(exe)
    interp = shebang(real)
    out = {"exo_realpath": real, "interpreter": interp, "mlx": None, "python": None, "where": None}
    hit = find_mlx(os.path.dirname(real)) or (find_mlx(os.path.dirname(interp)) if interp else None)
    if hit:
        out["where"] = hit
        out["mlx"] = os.path.basename(hit)[len("mlx-"):-len(".dist-info")]
        m = re.search(r"/python(\d+\.\d+)/", hit)
        out["python"] = m.group(1) if m else None
    if out["python"] is None and interp:
        m = re.search(r"python(\d+\.\d+)$", interp)
        out["python"] = m.group(1) if m else None
    return out

"""Probe `exos`: {programs: [path], addresses: [str], default_port: int} -> {exos: [row]}: every process on this
node that runs exo, told by its program, never by its command line alone.

- A binary: the process's executable is one of `programs` (the configured or looked-up exo and the installs found),
  or an EXO.app bundle's (`*/EXO.app/Contents/MacOS/EXO`, the app; `*/EXO.app/Contents/Resources/exo/exo`, its
  runtime), wherever the app is.
- A console script: a python runs a `#!` script as argv[1] (as the kernel runs one) that is one of `programs`, or
  whose `#!` program is that python and whose code imports exo's entry point `exo.main` (Homebrew, uv tool and pipx
  installs, `uv run exo` in a checkout: uv runs the checkout's `.venv/bin/exo`).
- `python -m exo` (or `-m exo.main`): a python whose exo package (`exo/main.py`) is where that python imports it
  from: its working directory, its PYTHONPATH (where its environment can be read), the site-packages of its venv
  or prefix and the dirs their `.pth` files add (an editable install of a checkout).
A process whose executable cannot be read (another user's, on Linux) cannot be told and is not listed.

Row: {pid, ppid, uid, user, own (this user's), start, exe, cmdline, program (what identified it), form (EXO.app,
Homebrew, uv tool, pipx, uv run / venv, python -m exo, console script), api_port and port_from (`--api-port` in
its argv, else exo's default), serving (a connect to that port on `addresses` succeeds), parent (its parent's
command, e.g. `uv run exo`)}.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import socket
import subprocess
import sys

if "proc_info" not in globals():  # imported as a module (tests); on a node _proc.py and procs.py are prepended
    from modeldrop.probes._proc import all_procs, proc_info
    from modeldrop.probes.procs import program, runs

APP_TAILS = ("/EXO.app/Contents/MacOS/EXO", "/EXO.app/Contents/Resources/exo/exo")
ENTRY = re.compile(rb"^\s*(from\s+exo\.main\s+import|import\s+exo\.main\b)", re.M)
MODULES = ("exo", "exo.main", "exo.__main__")
EXO_DEFAULT_API_PORT = 52415


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def is_python(exe) -> bool:
    """Is the executable a Python interpreter (python3.13, a framework build's Python)?"""
    return bool(exe) and os.path.basename(exe).lower().startswith("python")


def form_of(path: str) -> str:
    """What kind of install a program path is, from where it lives."""
    real = _real(path)
    for p in (path, real):
        if "/EXO.app/" in p:
            return "EXO.app"
    if "/uv/tools/" in real:
        return "uv tool"
    if "/pipx/venvs/" in real:
        return "pipx"
    if path.startswith(("/opt/homebrew/", "/usr/local/")) or "/Cellar/" in real:
        return "Homebrew"
    if "/.venv/" in path or "/.venv/" in real:
        return "uv run / venv"
    return "console script"


def _head(path: str, size: int = 8192) -> bytes:
    try:
        with open(_real(path), "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def exo_script(row: dict) -> str | None:
    """argv[1] when the process is a python running an exo console script (see the module docstring)."""
    argv = row.get("cmdline") or []
    if len(argv) < 2 or not is_python(row.get("exe")) or not argv[1].startswith("/"):
        return None
    data = _head(argv[1])
    if not data.startswith(b"#!") or not ENTRY.search(data):
        return None
    return argv[1] if runs(row, program(argv[1])) else None


def module_of(argv: list) -> str | None:
    """The module a python command line runs with -m (`-m exo`, `-mexo`), else None."""
    for i, a in enumerate(argv[1:], 1):
        if a == "-m" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("-m") and len(a) > 2 and not a.startswith("--"):
            return a[2:]
        if a == "-c" or not a.startswith("-"):
            return None
    return None


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        pass
    if sys.platform != "darwin":
        return None
    try:
        out = subprocess.run(["/usr/sbin/lsof", "-a", "-p", str(pid), "-d", "cwd", "-Fn"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10, check=False).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return None
    return next((line[1:] for line in out.splitlines() if line.startswith("n/")), None)


def _environ_path(pid: int) -> list:
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return []
    for item in env:
        if item.startswith(b"PYTHONPATH="):
            return [p for p in item[11:].decode("utf-8", "replace").split(":") if p]
    return []


def _site_dirs(row: dict) -> list:
    """Where this python imports installed packages from: its venv's or prefix's site-packages, and .pth dirs."""
    argv = row.get("cmdline") or []
    starts = [os.path.abspath(argv[0])] if argv and argv[0].startswith("/") else []
    starts.append(row.get("exe") or "")
    sites = []
    for start in starts:
        d = os.path.dirname(start)
        for _ in range(4):
            d = os.path.dirname(d)
            sites += glob.glob(os.path.join(glob.escape(d), "lib", "python3*", "site-packages"))
    out = list(dict.fromkeys(sites))
    for site in list(out):
        for pth in glob.glob(os.path.join(glob.escape(site), "*.pth")):
            try:
                lines = open(pth, encoding="utf-8", errors="replace").read().splitlines()
            except OSError:
                continue
            out += [x.strip() for x in lines if x.strip().startswith("/") and os.path.isdir(x.strip())]
    return out


def exo_package(row: dict) -> str | None:
    """The exo package dir a `python -m exo` process runs, found where its python imports from, else None."""
    argv = row.get("cmdline") or []
    if not is_python(row.get("exe")) or module_of(argv) not in MODULES:
        return None
    pid = int(row["pid"])
    dirs = [d for d in [_cwd(pid)] if d] + _environ_path(pid) + _site_dirs(row)
    for d in dirs:
        pkg = os.path.join(d, "exo")
        if os.path.isfile(os.path.join(pkg, "main.py")):
            return pkg
    return None


def api_port(argv: list, default: int) -> tuple:
    """(port, "argv" | "default"): exo's --api-port from its command line, else its default."""
    for i, a in enumerate(argv):
        if a == "--api-port" and i + 1 < len(argv) and argv[i + 1].isdigit():
            return int(argv[i + 1]), "argv"
        if a.startswith("--api-port=") and a[11:].isdigit():
            return int(a[11:]), "argv"
    return default, "default"


def serving(addresses: list, port: int) -> bool:
    for a in addresses:
        try:
            with socket.create_connection((a, port), timeout=1.0):
                return True
        except OSError:
            continue
    return False


def identify(row: dict, progs: list) -> tuple:
    """(program, form) when the process runs exo, else (None, None)."""
    exe = row.get("exe")
    if not exe:
        return None, None
    real = os.path.realpath(exe)
    for tail in APP_TAILS:
        if real.endswith(tail):
            return real, "EXO.app"
    for path, prog in progs:
        if runs(row, prog):
            return path, form_of(path)
    script = exo_script(row)
    if script:
        return script, form_of(script)
    pkg = exo_package(row)
    if pkg:
        return "%s -m %s (package %s)" % ((row.get("cmdline") or [exe])[0], module_of(row["cmdline"]), pkg), \
            "python -m exo"
    return None, None


def _user(uid) -> str | None:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, TypeError, ValueError):
        return None


def main(args: dict) -> dict:
    """Every process that runs exo (see the module docstring), this probe's own chain excluded."""
    progs = [(p, program(p)) for p in args.get("programs") or [] if p]
    default = int(args.get("default_port") or EXO_DEFAULT_API_PORT)
    addresses = list(args.get("addresses") or ["127.0.0.1"])
    mine = {os.getpid(), os.getppid()}
    out = []
    for row in all_procs():
        if row.get("pid") in mine:
            continue
        prog, form = identify(row, progs)
        if prog is None:
            continue
        port, source = api_port(row.get("cmdline") or [], default)
        parent = proc_info(int(row.get("ppid") or 0)) if row.get("ppid") else None
        pargv = (parent or {}).get("cmdline") or []
        if form != "EXO.app" and pargv and os.path.basename(pargv[0]) == "uv" and "run" in pargv[1:]:
            form = "uv run"
        out.append({"pid": row["pid"], "ppid": row.get("ppid"), "uid": row.get("uid"), "user": _user(row.get("uid")),
                    "own": row.get("uid") == os.getuid(),
                    "start": row.get("start"), "exe": row.get("exe"), "cmdline": row.get("cmdline"), "program": prog,
                    "form": form, "api_port": port, "port_from": source, "serving": serving(addresses, port),
                    "parent": " ".join(pargv[:4]) or None})
    return {"exos": out}

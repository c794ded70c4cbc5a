"""Probe `procs`: {pids: [int] | null, exe_paths: [str] | null, own_only: bool, argv_has: [str] | null} ->
{procs: [{pid, ppid, uid, start, exe, cmdline}]}.

With `pids`, those processes that are alive; with `exe_paths`, processes whose PROGRAM is one of the paths:
for a binary, the process's executable is that file; for a script (`#!` first line, e.g. a console-script
exo or hf), the process's executable is the script's interpreter AND its argv[1] is the script (that is how
the kernel runs a script; with `#!/usr/bin/env NAME` the interpreter is found by NAME, so argv[0]'s name
must be NAME; a macOS framework python runs as `Python.app/.../Python` with the interpreter path kept in
argv[0]; a `#!/bin/sh` script that re-executes itself, `exec … PYTHON "$0" "$@"` as its first command, as pip and
uv write console scripts whose interpreter path is too long or has a space for a `#!` line, runs as PYTHON).
Nothing matches on argv alone: `tail <path> -f`, or another program started with the path
as its argv[0] or symlinked there, is not the program. With `own_only`, only processes of the user running
the probe. With `argv_has`, only processes whose command line holds every one of those strings as a whole
word: how a probe is found by the nonce it was started with before it reported its pid. With neither
pids nor paths, every process.
"""

from __future__ import annotations

import os
import shlex

SHELLS = ("sh", "bash", "dash", "zsh", "ksh")

if "proc_info" not in globals():  # imported as a module (tests); on a node _proc.py is prepended
    from modeldrop.probes._proc import all_procs, proc_info


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def program(path: str) -> dict:
    """What running `path` executes: {script, binary} for a binary, {script, interpreter | env_name} for a
    script with a `#!` line (the script's realpath in `script`)."""
    real = _real(path)
    try:
        with open(real, "rb") as f:
            data = f.read(8192)
    except OSError:
        data = b""
    lines = data.split(b"\n")[:-1 if len(data) == 8192 else None] or [b""]  # no cut line at the read's end
    head = lines[0]
    if not head.startswith(b"#!"):
        return {"binary": real, "script": real}
    words = head[2:].decode("utf-8", "replace").split()
    if not words:
        return {"binary": real, "script": real}
    if os.path.basename(words[0]) == "env":
        names = [w for w in words[1:] if not w.startswith("-")]
        return {"script": real, "env_name": names[0] if names else None}
    code = [x for x in lines[1:] if x.strip() and not x.lstrip().startswith(b"#")][:1]  # the first command
    again = _reexec_interpreter(code[0]) if code and os.path.basename(words[0]) in SHELLS else None
    return {"script": real, "interpreter": _real(again or words[0])}


def _reexec_interpreter(line: bytes) -> str | None:
    """The absolute interpreter path of a shell line `exec … /path/python "$0" "$@"`, read as the shell reads
    its quotes (pip's line starts with three quotes before `exec'`), or None when the line is not such an exec."""
    try:
        words = shlex.split(line.decode("utf-8", "replace"), comments=True)
    except ValueError:
        return None
    if not words or words[0] != "exec" or "$0" not in words:
        return None
    i = words.index("$0")
    return words[i - 1] if i >= 2 and os.path.isabs(words[i - 1]) else None


def runs(p: dict, prog: dict) -> bool:
    """Is process row `p` running program `prog` (see the module docstring)?"""
    exe = p.get("exe")
    argv = list(p.get("cmdline") or [])
    exe_real = os.path.realpath(exe) if exe else None
    if "binary" in prog:
        return exe_real == prog["binary"]
    if len(argv) < 2 or _real(argv[1]) != prog["script"]:
        return False
    if "interpreter" in prog:
        if exe_real is None:
            return False
        # a macOS framework python re-executes itself as .../Python.app/Contents/MacOS/Python, keeping argv[0]
        framework = os.path.basename(exe_real).lower().startswith("python") and _real(argv[0]) == prog["interpreter"]
        return exe_real == prog["interpreter"] or framework
    name = prog.get("env_name")
    return bool(name) and os.path.basename(argv[0]) == name and exe_real is not None


def main(args: dict) -> dict:
    """Live processes selected by pid, program path and owner."""
    pids = args.get("pids")
    exe_paths = args.get("exe_paths")
    if pids is not None:
        rows = [r for r in (proc_info(int(p)) for p in pids) if r]
    else:
        rows = all_procs()
    if args.get("own_only"):
        rows = [r for r in rows if r.get("uid") == os.getuid()]
    needles = args.get("argv_has") or []
    if needles:
        rows = [r for r in rows if all(n in (r.get("cmdline") or []) for n in needles)]
    if exe_paths:
        progs = [program(e) for e in exe_paths]
        rows = [r for r in rows if any(runs(r, prog) for prog in progs)]
    return {"procs": rows}

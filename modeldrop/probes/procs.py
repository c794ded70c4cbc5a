"""Probe `procs`: {pids: [int] | null, exe_paths: [str] | null} -> {procs: [{pid, ppid, start, exe, cmdline}]}.

With `pids`, those processes that are alive; with `exe_paths`, processes whose executable or first two argv
entries (an interpreter's script) resolve to one of the paths; with neither, every process.
"""

from __future__ import annotations

import os

if "proc_info" not in globals():  # imported as a module (tests); on a node _proc.py is prepended
    from modeldrop.probes._proc import all_procs, proc_info


def _matches(p: dict, wanted: set) -> bool:
    cands = [p.get("exe")] + list(p.get("cmdline") or [])[:2]
    return any(c and (c in wanted or os.path.realpath(os.path.expanduser(c)) in wanted) for c in cands)


def main(args: dict) -> dict:
    """Live processes selected by pid and/or executable path."""
    pids = args.get("pids")
    exe_paths = args.get("exe_paths")
    if pids is not None:
        rows = [r for r in (proc_info(int(p)) for p in pids) if r]
    else:
        rows = all_procs()
    if exe_paths:
        wanted = set()
        for e in exe_paths:
            x = os.path.expanduser(e)
            wanted.update({e, x, os.path.realpath(x)})
        rows = [r for r in rows if _matches(r, wanted)]
    return {"procs": rows}

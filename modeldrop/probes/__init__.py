"""Probes: stdlib-only Python 3.9 scripts that run ON a node, one round trip each.

A probe is `modeldrop/probes/<name>.py` defining `main(args: dict) -> dict`. `probe_payload(name, args)`
returns the script's source plus a footer that calls `main` with the args (embedded as a JSON string
literal) and prints the result as one JSON line prefixed with `RESULT_MARKER`; before calling `main` it
prints the python's own pid on stderr as `modeldrop-pid <pid>` (so a long probe can be stopped by pid).
The payload goes to the node's python on stdin (`python3 - modeldrop-probe <name> <nonce>`: the words
after `-` only mark the process's command line, see `probe_argv_tags`), so nothing is left on the node. A
probe whose args hold `_watch` (`watch_spec`: the long ones, and `supervise`) also gets `_watch.py`: it ends
by itself at its node-side limit or when its controller is gone, says `modeldrop-alive` on stderr every
HEARTBEAT_S (`strip_alive` drops those lines), and keeps a small record in NODE_RECORD_DIR while it runs. A long
probe may say how far it is with `modeldrop-progress <json>` lines on stderr (`_progress.py`, `parse_progress`).
The interpreter is chosen by the constant shell snippet `PYTHON_PICK`: it never runs the
`/usr/bin/python3` CLT stub on a Mac without Command Line Tools, and exits 97 with `NO_PYTHON` when
there is no python.

Probe rules (checked by tests_selftest/unit/probes/test_probes.py with vermin): Python 3.9 stdlib only, no `match`,
no runtime `X | Y`, no tomllib, no hashlib.file_digest; `from __future__ import annotations` at the top.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

PID_TAG = "modeldrop-pid"  # `modeldrop-pid <pid>` on stderr: the pid of a process the run started
PROBE_DIR = Path(__file__).resolve().parent
RESULT_MARKER = "@@MODELDROP-RESULT@@ "
PICKED_MARKER = "@@MODELDROP-PY@@ "
NO_PYTHON_RC = 97
ALIVE = "modeldrop-alive"  # a watched probe's heartbeat line on stderr (`_watch.ALIVE`)
PROGRESS_TAG = "modeldrop-progress"  # `modeldrop-progress <json>` on stderr: how far a long probe is (`_progress.py`)
HEARTBEAT_S = 5.0  # how often a watched probe says it is alive (and finds out its controller is gone)
NODE_RECORD_DIR = "~/.modeldrop/running"  # where long work records itself on a node (see _watch.py)

# The only shell text the suite sends besides shlex-joined argv: pick a python, say which one on stderr
# (the node caches it), and exec it on the probe script arriving on stdin.
PYTHON_PICK = (
    'PY=; for p in /opt/homebrew/bin/python3 /usr/local/bin/python3; do '
    'if [ -x "$p" ]; then PY=$p; break; fi; done; '
    'if [ -z "$PY" ]; then '
    'if [ "$(uname -s)" = Darwin ]; then '
    'D=$(xcode-select -p 2>/dev/null) && [ -x "$D/usr/bin/python3" ] && PY=$D/usr/bin/python3; '
    'elif [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; '
    'else PY=$(command -v python3 2>/dev/null); fi; fi; '
    'if [ -z "$PY" ]; then echo NO_PYTHON >&2; exit 97; fi; '
    f'echo "{PICKED_MARKER}$PY" >&2; exec "$PY" - "$@"'
)
PROBE_TAG = "modeldrop-probe"  # the first word after `-` on every probe's command line

PROBES = ("facts", "tool", "disk", "manifest", "hashes", "ports", "sockets", "procs", "tail", "spawn",
          "stop", "fs", "dirsize", "reach", "locate", "runtime", "supervise", "leftovers", "serving", "exos")

_FOOTER = """

if __name__ == "__main__":
    import json as _json
    import os as _os
    import sys as _sys
    _sys.stderr.write({pid_tag!r} + " %d\\n" % _os.getpid())
    _sys.stderr.flush()
    _args = _json.loads({args_literal})
    _spec = _args.pop("_watch", None)
    if _spec is not None:
        watch_start(_spec)
    try:
        _result = main(_args)
    finally:
        if _spec is not None:
            watch_end()
    _sys.stdout.write("\\n" + {marker!r} + _json.dumps(_result, sort_keys=True) + "\\n")
    _sys.stdout.flush()
"""


# Helper modules prepended to a probe's payload (their names are then defined in the probe's namespace).
PROBE_DEPS = {"procs": ("_proc",), "spawn": ("_proc",), "stop": ("_proc", "procs"), "tool": ("_proc",),
              "supervise": ("_proc", "_watch"), "leftovers": ("_proc",), "ports": ("_net",), "sockets": ("_net",),
              "locate": ("_progress", "manifest"), "manifest": ("_progress",), "hashes": ("_progress",),
              "serving": ("_proc", "procs", "_progress", "manifest"), "exos": ("_proc", "procs")}
_FUTURE = "from __future__ import annotations\n"


@cache
def probe_source(name: str, watched: bool = False) -> str:
    """The full script of probe `name` (helpers first, `_watch` too when `watched`); ValueError for a name that is
    not a probe."""
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; probes: {', '.join(PROBES)}")
    deps = (*PROBE_DEPS.get(name, ()), *(("_proc", "_watch") if watched else ()))
    names = list(dict.fromkeys((*deps, name)))
    parts = [(PROBE_DIR / f"{n}.py").read_text(encoding="utf-8") for n in names]
    return _FUTURE + "".join(p.replace(_FUTURE, "", 1) for p in parts)


def probe_payload(name: str, args: dict) -> bytes:
    """The script sent on stdin: the probe's source and a footer that prints main(args) as one JSON line. Args
    holding `_watch` (see `watch_spec`) put the probe under node-side limits (`_watch.py`)."""
    args_literal = repr(json.dumps(args))
    footer = _FOOTER.format(args_literal=args_literal, marker=RESULT_MARKER, pid_tag=PID_TAG)
    return (probe_source(name, "_watch" in args) + footer).encode()


def watch_spec(limit_s: float, what: str, run_id: str | None) -> dict:
    """The `_watch` arg of a probe that must end by itself on the node after limit_s, or when its controller is
    gone, and is recorded under NODE_RECORD_DIR while it runs."""
    return {"limit_s": limit_s, "heartbeat_s": HEARTBEAT_S, "record_dir": NODE_RECORD_DIR, "run_id": run_id,
            "what": what}


def strip_alive(text: str) -> str:
    """Output without the heartbeat lines of a watched probe."""
    if ALIVE not in text:
        return text
    return "".join(line.replace(ALIVE + "\n", "") for line in text.splitlines(keepends=True)
                   if line.rstrip("\r\n") != ALIVE)


def parse_progress(line: str) -> dict | None:
    """The object of a `modeldrop-progress <json>` line, else None (a node's output is not trusted to be well
    formed)."""
    if not line.startswith(PROGRESS_TAG + " "):
        return None
    try:
        fields = json.loads(line[len(PROGRESS_TAG) + 1:])
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def new_nonce() -> str:
    """A fresh nonce for one probe's command line (12 hex digits: nothing else on a node carries it)."""
    return os.urandom(6).hex()


def is_nonce(word: str) -> bool:
    """Is word a nonce as `new_nonce` makes them?"""
    return len(word) == 12 and all(c in "0123456789abcdef" for c in word)


def probe_argv_tags(name: str, nonce: str) -> list[str]:
    """The words after `python3 -` that mark one probe's command line (`modeldrop-probe <name> <nonce>`):
    the python ignores them (its sys.argv[1:]); they identify the process before it is stopped."""
    return [PROBE_TAG, name, nonce]


def parse_result(stdout: str) -> dict | None:
    """The JSON object the probe printed after RESULT_MARKER (the last one), or None if there is none
    (or it is cut short / not an object: the node's output is not trusted to be well formed)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                result = json.loads(line[len(RESULT_MARKER):])
            except ValueError:
                return None
            return result if isinstance(result, dict) else None
    return None


def parse_picked(stderr: str) -> tuple[str | None, str]:
    """(the python PYTHON_PICK chose, stderr without that line)."""
    picked, rest = None, []
    for line in stderr.splitlines(keepends=True):
        if line.startswith(PICKED_MARKER):
            picked = line[len(PICKED_MARKER):].strip()
        else:
            rest.append(line)
    return picked, "".join(rest)

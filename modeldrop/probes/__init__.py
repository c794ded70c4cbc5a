"""Probes: stdlib-only Python 3.9 scripts that run ON a node, one round trip each.

A probe is `modeldrop/probes/<name>.py` defining `main(args: dict) -> dict`. `probe_payload(name, args)`
returns the script's source plus a footer that calls `main` with the args (embedded as a JSON string
literal) and prints the result as one JSON line prefixed with `RESULT_MARKER`; before calling `main` it
prints the python's own pid on stderr as `modeldrop-pid <pid>` (so a long probe can be stopped by pid).
The payload goes to the node's python on stdin (`python3 - modeldrop-probe <name> <nonce>`: the words
after `-` only mark the process's command line, see `probe_argv_tags`), so nothing is left on the node.
The interpreter is chosen by the constant shell snippet `PYTHON_PICK`: it never runs the
`/usr/bin/python3` CLT stub on a Mac without Command Line Tools, and exits 97 with `NO_PYTHON` when
there is no python.

Probe rules (checked by tests_selftest/test_probes.py with vermin): Python 3.9 stdlib only, no `match`,
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
          "stop", "fs", "dirsize", "reach", "locate", "runtime")

_FOOTER = """

if __name__ == "__main__":
    import json as _json
    import os as _os
    import sys as _sys
    _sys.stderr.write({pid_tag!r} + " %d\\n" % _os.getpid())
    _sys.stderr.flush()
    _result = main(_json.loads({args_literal}))
    _sys.stdout.write("\\n" + {marker!r} + _json.dumps(_result, sort_keys=True) + "\\n")
    _sys.stdout.flush()
"""


# Helper modules prepended to a probe's payload (their names are then defined in the probe's namespace).
PROBE_DEPS = {"procs": ("_proc",), "spawn": ("_proc",), "stop": ("_proc", "procs"), "tool": ("_proc",), "ports": ("_net",), "sockets": ("_net",),
              "locate": ("manifest",)}
_FUTURE = "from __future__ import annotations\n"


@cache
def probe_source(name: str) -> str:
    """The full script of probe `name` (helpers first); ValueError for a name that is not a probe."""
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; probes: {', '.join(PROBES)}")
    parts = [(PROBE_DIR / f"{n}.py").read_text(encoding="utf-8") for n in (*PROBE_DEPS.get(name, ()), name)]
    return _FUTURE + "".join(p.replace(_FUTURE, "", 1) for p in parts)


def probe_payload(name: str, args: dict) -> bytes:
    """The script sent on stdin: the probe's source and a footer that prints main(args) as one JSON line."""
    args_literal = repr(json.dumps(args))
    footer = _FOOTER.format(args_literal=args_literal, marker=RESULT_MARKER, pid_tag=PID_TAG)
    return (probe_source(name) + footer).encode()


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

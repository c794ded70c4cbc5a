"""Read an operator's env file as a shell would: python-dotenv's parser, with file:line for every key.

Accepted: `KEY=value`, `export KEY=value`, single or double quotes, `# trailing comments`, blank
lines, and `${VAR}` / `${VAR:-default}` expansion (not inside single quotes) from keys set earlier in the file, \
else from the
environment. Every problem is an `InputError` of one line naming `file:line`: an unparsable line
(never echoed: it may be a pasted token), a key that `is_known` refuses (with the nearest known
key suggested), and a `${VAR}` that is set nowhere.
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from dotenv.parser import Binding, parse_stream
from dotenv.variables import Variable, parse_variables

from modeldrop.errors import InputError

_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def read(path: Path, is_known: Callable[[str], bool], known_keys: Iterable[str],
         environ: Mapping[str, str], pinned: Mapping[str, str] | None = None,
         unknown_hint: Callable[[str], str | None] | None = None) -> dict[str, tuple[str, str]]:
    """{KEY: (expanded value, "file:line")} for every binding of the file at `path`.

    `${VAR}` takes the value VAR will have in the run: `pinned` (keys set by a higher-precedence source,
    e.g. the command line's MODEL_ID), else the file's own earlier line, else the environment. An unknown key
    is said by `unknown_hint(key)` when it has words for it, else with the nearest known key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"--env-file: cannot read {path}: {e.strerror or e}") from None

    out: dict[str, tuple[str, str]] = {}
    for binding in parse_stream(io.StringIO(text)):
        where = f"{path}:{binding.original.line}"
        if binding.key is None and not binding.error:
            continue  # blank lines and comments
        key, value = _checked(binding, where)
        if not is_known(key):
            beyond = re.fullmatch(r"(?:[A-Z0-9_]+_)?NODE(\d+)", key)
            if beyond and int(beyond.group(1)) > 4:  # NODE5, MODEL_DIR_NODE5, ...: a fifth node
                raise InputError(f"{where}: {key}: modeldrop supports 1 to 4 nodes (NODE1..NODE4)")
            hint = unknown_hint(key) if unknown_hint else None
            raise InputError(f"{where}: {hint}" if hint else f"{where}: unknown key {key!r}"
                             f"{_nearest(key, known_keys)}; known keys are listed in config/model_drop.env.example")
        if _single_quoted(binding.original.string):  # shell: no expansion inside '…'
            out[key] = (value, where)
            continue
        scope = {**environ, **{k: v for k, (v, _) in out.items()}, **(pinned or {})}
        out[key] = (_expand(value, scope, where, key), where)
    return out


def _checked(binding: Binding, where: str) -> tuple[str, str]:
    """(key, raw value) of a well-formed `KEY=value` binding, else a one-line error that hides the line."""
    if binding.error or binding.value is None or not _KEY_RE.match(binding.key or ""):
        head = re.match(r"\s*(?:export\s+)?([A-Z][A-Z0-9_]*)\b", binding.original.string)
        hint = f" at {head.group(1)!r}" if head else ""
        raise InputError(f"{where}: malformed line{hint} "
                         "(expected KEY=value; the line is not shown, it may hold a secret)")
    return binding.key or "", binding.value


def _single_quoted(line: str) -> bool:
    """True when the value of a `KEY=value` line starts with a single quote."""
    return bool(re.match(r"\s*(?:export\s+)?[A-Z][A-Z0-9_]*\s*=\s*'", line))


def _nearest(key: str, known_keys: Iterable[str]) -> str:
    """'; did you mean 'MODEL_ID'?' for the closest known key, or ''."""
    match = difflib.get_close_matches(key, list(known_keys), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _expand(value: str, scope: Mapping[str, str], where: str, key: str) -> str:
    """`${VAR}` expanded from `scope`; a variable set nowhere (and without `:-default`) is an error."""
    atoms = list(parse_variables(value))
    for atom in atoms:
        if isinstance(atom, Variable) and atom.default is None and atom.name not in scope:
            raise InputError(f"{where}: {key} uses ${{{atom.name}}}, which is not set earlier in the file "
                             "nor in the environment")
    return "".join(atom.resolve(dict(scope)) for atom in atoms)

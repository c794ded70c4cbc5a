"""What a secret is, and the one function that masks secrets in everything the suite writes.

A secret is the value of a config key or environment variable whose name has a `TOKEN`, `SECRET`,
`PASSWORD` or `KEY` part (`HF_TOKEN`, `AWS_SECRET_ACCESS_KEY`; not `ACCEPT_NEW_HOST_KEYS`), when the
value has at least `MIN_LEN` characters (masking shorter strings would shred ordinary text).
Every artifact (ledger.jsonl, ledger.html, handoff.md, run.json, logs, pass_cache.json) masks them
with `***` through `redact` / `redact_obj`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
MIN_LEN = 4
SECRET_PARTS = frozenset({"TOKEN", "SECRET", "PASSWORD", "KEY"})


def is_secret_name(name: str) -> bool:
    """True for a key or variable name that holds a secret (`HF_TOKEN`), False for `PASS_MAX_AGE`."""
    return any(part in SECRET_PARTS for part in str(name).upper().split("_"))


def secret_values(values: Mapping[str, Any]) -> list[str]:
    """The values of the secret-named keys of `values` that are long enough to mask."""
    return [str(v) for k, v in values.items() if is_secret_name(k) and v and len(str(v)) >= MIN_LEN]


def masked(secrets: Iterable[str]) -> list[str]:
    """The secrets worth masking (non-empty, at least MIN_LEN characters), longest first."""
    return sorted({s for s in secrets if s and len(s) >= MIN_LEN}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***`."""
    for s in masked(secrets):
        text = text.replace(s, MASK)
    return text


def redact_obj(obj: Any, secrets: Iterable[str]) -> Any:
    """A copy of `obj` (dicts, lists, tuples, strings) with every secret inside its strings replaced by `***`."""
    keep = masked(secrets)

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            return redact(o, keep)
        if isinstance(o, Mapping):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        return o
    return walk(obj) if keep else obj


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with the value of every secret-named key replaced by `***` (empty values kept)."""
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in values.items()}

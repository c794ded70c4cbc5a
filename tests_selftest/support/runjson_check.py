"""Every run.json the self-tests write is held to modeldrop's JSON Schema (modeldrop/ledger/run.schema.json).

A session fixture (autouse) walks this session's temporary dir (each xdist worker its own) when the session ends
and validates every run.json under it with `jsonschema`: whole runs, plugin-kit runs, killed runs alike. An
invalid one fails the session (an error at the teardown of its last test) naming the file and what is wrong.
`check(path)` is the same check for one file.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from modeldrop.ledger.runjson import SCHEMA_PATH


@functools.cache
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def check(path: Path, v: Draft202012Validator | None = None) -> list[str]:
    """What is wrong with one run.json (empty when it is valid)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [f"unreadable: {e}"]
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}"
            for e in (v or validator()).iter_errors(doc)]


@pytest.fixture(scope="session", autouse=True)
def run_json_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session: every run.json written under this session's temporary dir is valid."""
    yield
    base = tmp_path_factory.getbasetemp()
    v = validator()
    bad = {str(p): errs for p in sorted(base.rglob("run.json")) if (errs := check(p, v))}
    assert not bad, "run.json files that break modeldrop/ledger/run.schema.json:\n" + "\n".join(
        f"{p}: {'; '.join(errs[:3])}" for p, errs in bad.items())

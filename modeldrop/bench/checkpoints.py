"""Case checkpoints: one JSON per benchmark case, written atomically, reused on rerun.

Contract
--------
- `case_path(run_dir, case_id)` = `<run_dir>/bench/<case_id>.json`.
- `write_case(run_dir, payload)` writes `payload` (must hold "case_id") atomically: a temp file
  in the same directory, flushed and fsynced, then `os.replace`. Readers never see half a file.
- `find_done(case_id, fingerprint, config_key, run_dir, reports_dir, model_id)` returns
  `(path, payload)` of a finished checkpoint of that case with the *same fingerprint and config
  key*, looking first in the current run folder, then in earlier run folders of the same model
  under `reports_dir` (`<UTC stamp>-<org--name>[-k]`, newest first), or None. A payload counts as finished when
  it has a "summary". Unreadable files are skipped (and logged), never fatal.
- `previous_measurement(case_id, model_id, reports_dir, run_dir)` returns the newest *measured*
  (not reused) payload of the same case from an earlier run of the same model, whatever its
  fingerprint, for regression reporting.
- `config_key(config)` is a short stable hash of a JSON-able config dict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modeldrop import atomic
from modeldrop.validate import model_folder

log = logging.getLogger("modeldrop.bench")
SCHEMA = "modeldrop.bench.case/1"


def config_key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def case_path(run_dir: Path, case_id: str) -> Path:
    return Path(run_dir) / "bench" / f"{case_id}.json"


def write_case(run_dir: Path, payload: dict[str, Any]) -> Path:
    path = case_path(run_dir, payload["case_id"])
    atomic.write_text(path, json.dumps({"schema": SCHEMA, **payload}, indent=1, default=str))
    return path


def read_case(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("skipping unreadable checkpoint %s: %s", path, e)
        return None
    return obj if isinstance(obj, dict) else None


def _model_runs(reports_dir: Path, model_id: str, exclude: Path | None) -> Iterator[Path]:
    """Run folders that may be this model's, newest first (names start with a UTC stamp), symlinks skipped.
    The name alone is ambiguous (`org/m` + a `-2` collision suffix looks like `org/m-2`): callers also check
    the payload's model_id."""
    if not Path(reports_dir).is_dir():
        return
    skip = exclude.resolve() if exclude is not None else None
    name = re.compile(rf"^\d{{8}}T\d{{6}}Z-{re.escape(model_folder(model_id))}(-\d+)?$")
    runs = [p for p in Path(reports_dir).iterdir()
            if name.match(p.name) and p.is_dir() and not p.is_symlink() and p.resolve() != skip]
    yield from sorted(runs, key=lambda p: p.name, reverse=True)


def find_done(case_id: str, fingerprint: str, cfg_key: str, run_dir: Path, reports_dir: Path | None,
              model_id: str) -> tuple[Path, dict[str, Any]] | None:
    """A finished checkpoint with the same fingerprint and config key; see module contract."""
    candidates = [case_path(run_dir, case_id)]
    if reports_dir is not None:
        candidates += [case_path(r, case_id) for r in _model_runs(reports_dir, model_id, run_dir)]
    for path in candidates:
        if not path.is_file():
            continue
        payload = read_case(path)
        if (payload and payload.get("fingerprint") == fingerprint and payload.get("config_key") == cfg_key
                and payload.get("summary") is not None):
            return path, payload
    return None


def previous_measurement(case_id: str, model_id: str, reports_dir: Path | None,
                         run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest measured (not reused) payload of `case_id` in an earlier run of the model."""
    if reports_dir is None:
        return None
    for run in _model_runs(reports_dir, model_id, run_dir):
        path = case_path(run, case_id)
        if path.is_file():
            payload = read_case(path)
            if (payload and payload.get("model_id") == model_id and payload.get("summary") is not None
                    and not payload.get("reused_from")):
                return path, payload
    return None


def load_run_cases(run_dir: Path, phase: str | None = None) -> list[dict[str, Any]]:
    """All finished case payloads of a run folder (optionally one phase), sorted by case id."""
    out = []
    for path in sorted((Path(run_dir) / "bench").glob("*.json")):
        payload = read_case(path)
        if payload and payload.get("summary") is not None and (phase is None or payload.get("phase") == phase):
            out.append(payload)
    return out

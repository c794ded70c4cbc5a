"""model_profiles.json: what the suite knows about a model from earlier bootstraps.

Shape: `{"version": 1, "models": {"org/name": {<fields below>}}}`. `load` validates every row and
raises `InputError` naming the file and field; `status_gate` decides whether a run may start
(blocked and deprecated stop it before any node is touched unless allowed; watch warns).

Counts are kept as the guide keeps them (`after_green_bootstrap`): what one green run measured is recorded under
`observed` (with its hub commit); it becomes the row's expectations (`expected_safetensors`, `expected_gguf`,
`expected_files`, `shard_pattern`, `required_files`, and `hub_commit`, the commit they hold for) when a second
green run on the same hub commit agrees, or with --update-profile. An observation never changes what a run is
configured with, so it changes no gate fingerprint; only expectations do. A new hub commit is said as such.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from modeldrop import atomic
from modeldrop.errors import InputError

LOCK_TIMEOUT_S = 60.0  # how long a green run waits for another one writing the profiles file

STATUSES = ("active", "watch", "blocked", "deprecated")
FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "status": (str, "one of " + "/".join(STATUSES)),
    "include": (list, "a list of hf --include globs"),
    "expected_safetensors": (int, "a whole number"),
    "expected_gguf": (int, "a whole number"),
    "total_size_bytes": (int, "a whole number of bytes"),
    "disk_threshold_gb": ((int, float), "a number of GB"),
    "sharding": (str, "Pipeline or Tensor"),
    "instance_meta": (str, "MlxRing or MlxJaccl"),
    "instance_id": (str, "a string"),
    "hub_commit": (str, "a 40-hex commit"),
    "notes": (str, "a string"),
    "reason": (str, "a string"),
    "updated": (str, "an ISO time"),
    "reference": (dict, "an object of reference figures"),
    "exclude": (list, "a list of hf --exclude globs"),
    "expected_files": (int, "a whole number of files"),
    "shard_pattern": (str, "the weight files' name pattern, e.g. model-*-of-00009.safetensors"),
    "required_files": (list, "a list of the non-shard files serving needs"),
    "topology": (str, "a note of the nodes, hardware and links"),
    "observed": (dict, "an object of what the last green runs measured"),
    "serving": (dict, "an object: what preflight's serving verdict saw (model_type, format, quantization, size)"),
    "exo_synch_flag": (str, "the MLX fast-synch flag the green cluster ran with"),
}
# observation keys -> the row's expectation fields they become once confirmed
EXPECTATIONS = {"safetensors": "expected_safetensors", "gguf": "expected_gguf", "files": "expected_files",
                "shard_pattern": "shard_pattern", "required_files": "required_files"}


def load(path: Path) -> dict[str, Any]:
    """Load and validate the profiles file; a missing file is an empty profile set."""
    if not path.exists():
        return {"version": 1, "models": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}; fix it, or move it "
                         "aside to start an empty table (PROFILE_PATH names the file)") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
        raise InputError(f'{path}: expected an object {{"version": 1, "models": {{"org/name": {{...}}}}}}')
    for model, row in data.get("models", {}).items():
        _check_row(path, model, row)
    data.setdefault("models", {})
    return data


def _check_row(path: Path, model: str, row: Any) -> None:
    """Validate one model row: known fields, right types, status in STATUSES."""
    where = f"{path}: models[{model!r}]"
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected an object of profile fields")
    for key, value in row.items():
        if key not in FIELDS:
            raise InputError(f"{where}: unknown field {key!r}; known fields: {', '.join(FIELDS)}")
        kind, what = FIELDS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InputError(f"{where}.{key}: invalid value {value!r}; expected {what}")
    if row.get("status", "active") not in STATUSES:
        raise InputError(f"{where}.status: invalid value {row['status']!r}; expected one of {', '.join(STATUSES)}")
    for key in ("include", "exclude", "required_files"):
        if not all(isinstance(p, str) and p for p in row.get(key, [])):
            raise InputError(f"{where}.{key}: expected a list of non-empty strings")


def lookup(profiles: dict[str, Any], model: str) -> dict | None:
    """The row for `model`, or None."""
    return profiles.get("models", {}).get(model)


def row_file(path: Path, seed: Path | None, model: str) -> Path:
    """Where `model`'s row lives: `path` (the file a run writes), unless only `seed` (a checkout's tracked table,
    modeldrop.statedirs) has it. A first green run writes `path`; --update-profile rewrites the row where it is."""
    if seed is None or lookup(load(path), model) is not None or lookup(load(seed), model) is None:
        return path
    return seed


def status_gate(profile: dict | None, model: str, *, allow_blocked: bool) -> str | None:
    """Raise InputError when the profile forbids the run; return a warning text for `watch`, else None."""
    if not profile:
        return None
    status = profile.get("status", "active")
    why = f" ({profile['reason']})" if profile.get("reason") else ""
    if status == "blocked" and not allow_blocked:
        raise InputError(f"{model}: profile status is blocked{why}; "
                         "pass --allow-blocked-model (or ALLOW_BLOCKED_MODEL=1) to run it anyway")
    if status == "deprecated":
        raise InputError(f"{model}: profile status is deprecated{why}; "
                         "use its successor or set the status to active in the profile")
    if status == "watch":
        return f"{model}: profile status is watch{why}; results are recorded but treat them with care"
    return None


KEEP_STATUSES = ("watch", "blocked", "deprecated")


def record_bootstrap(path: Path, model_id: str, row_updates: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Create or update `model_id`'s row after a green bootstrap; return the diff {field: {old, new}}.

    Under a file lock (`lock_path`, waited for LOCK_TIMEOUT_S at most: TimeoutError in one line), so two runs
    never lose each other's rows: the file is re-read and validated, the row merged with `row_updates` (fields
    of `FIELDS` only), `updated` set to now (UTC ISO), and written atomically (temp file in the same dir +
    os.replace).
    A row whose status is watch/blocked/deprecated keeps it: a green run does not lift an operator's
    decision; new rows are `active`. `updated` alone is not a change: with nothing else different the
    file is left untouched and the diff is empty.
    """
    lock = FileLock(str(lock_path(path)))
    try:
        lock.acquire(timeout=LOCK_TIMEOUT_S)
    except Timeout:
        raise TimeoutError(f"{path}: another run has held {lock.lock_file} for {LOCK_TIMEOUT_S:g}s; the profile "
                           f"row of {model_id} was not written (rerun with --update-profile once it is done)") from None
    try:
        return _merge_row(path, model_id, row_updates)
    finally:
        lock.release()


def lock_path(path: Path) -> Path:
    """The lock file beside the profiles file (hidden; it stays, as flock-based lock files must)."""
    return path.with_name(f".{path.name}.lock")


def _merge_row(path: Path, model_id: str, row_updates: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """record_bootstrap's read-merge-write (the caller holds the lock)."""
    data = load(path)
    old = dict(data["models"].get(model_id) or {})
    new = {**old, **{k: v for k, v in row_updates.items() if k in FIELDS and v is not None}}
    if old.get("status") in KEEP_STATUSES:
        new["status"] = old["status"]
    new.setdefault("status", "active")
    diff = {k: {"old": old.get(k), "new": new.get(k)} for k in new if k != "updated" and old.get(k) != new.get(k)}
    if not diff:
        return {}
    new["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    diff["updated"] = {"old": old.get("updated"), "new": new["updated"]}
    _check_row(path, model_id, new)
    data["models"][model_id] = new
    data.setdefault("version", 1)
    atomic.write_json(path, data)
    return diff


# Fields a later green run compares with the row (status and notes stay the operator's; expectations follow the
# observation rule).
COMPARED = tuple(k for k in FIELDS if k not in ("status", "notes", "reason", "updated", "reference", "topology",
                                               "observed", "hub_commit", *EXPECTATIONS.values()))


@dataclass
class ProfileOutcome:
    """What a green bootstrap did to the model's row: the written changes ({field: {old, new}}), the fields it
    measured differently from a row that is kept (`differences`), and lines to say (`said`: observed, confirmed;
    `warnings`: a new hub commit, counts that differ on the same commit)."""

    diff: dict[str, dict[str, Any]] = field(default_factory=dict)
    differences: dict[str, dict[str, Any]] = field(default_factory=dict)
    said: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def written(self) -> bool:
        return bool(self.diff)


def after_green_bootstrap(path: Path, model_id: str, row_updates: dict[str, Any], *,
                          observation: dict[str, Any] | None = None, rewrite: bool = False,
                          read_only: bool = False) -> ProfileOutcome:
    """The profile rule of a green bootstrap (see the module docstring).

    `row_updates` are the descriptive fields (include, sharding, disk threshold, topology, notes…): a model
    without a row gets them all; a row keeps its own and only gains the fields it lacks, the others measured
    differently are reported, unless `rewrite` (--update-profile). `observation` (None when this run measured no
    files: its verify passes were reused) is {hub_commit, safetensors, gguf, files, shard_pattern, required_files,
    total_size_bytes, run}. `read_only` (a checkout's tracked seed table, unless --update-profile): nothing is
    written; every change it would make is reported in `differences`.
    """
    old = lookup(load(path), model_id)
    out = ProfileOutcome()
    if old is None or rewrite:
        updates = dict(row_updates)
    else:
        updates = {k: v for k, v in row_updates.items() if old.get(k) is None and v is not None}
        out.differences = {k: {"old": old.get(k), "new": v} for k, v in row_updates.items()
                           if k in COMPARED and v is not None and old.get(k) is not None and old.get(k) != v}
    if observation is not None:
        updates.update(_observe(model_id, old or {}, observation, rewrite, out))
    if read_only:
        out.said = []
        out.differences.update({k: {"old": (old or {}).get(k), "new": v} for k, v in updates.items()
                                if k != "observed" and (old or {}).get(k) != v})
        return out
    out.diff = record_bootstrap(path, model_id, updates) if updates else {}
    return out


def _counts(obs: dict[str, Any]) -> dict[str, Any]:
    return {k: obs.get(k) for k in EXPECTATIONS}


def describe(obs: dict[str, Any]) -> str:
    """`9 safetensors, 0 gguf, 14 files (model-*-of-00009.safetensors)`."""
    pattern = f" ({obs['shard_pattern']})" if obs.get("shard_pattern") else ""
    return f"{obs.get('safetensors')} safetensors, {obs.get('gguf')} gguf, {obs.get('files')} files{pattern}"


def _observe(model_id: str, old: dict[str, Any], obs: dict[str, Any], rewrite: bool,
             out: ProfileOutcome) -> dict[str, Any]:
    """The row changes one observation makes (and what to say of it, into `out`)."""
    commit, run = obs.get("hub_commit"), obs.get("run")
    short = (commit or "unknown")[:12]
    record = {k: v for k, v in obs.items() if k != "run" and v is not None}
    expect = {f: obs[k] for k, f in EXPECTATIONS.items() if obs.get(k) is not None}
    prev = old.get("observed") or {}
    if rewrite:
        out.said.append(f"profile of {model_id}: expectations set from this run (--update-profile) on hub commit "
                        f"{short}: {describe(obs)}")
        return {**expect, "hub_commit": commit, "observed": {**record, "runs": [run], "agreeing_runs": 1}}
    if old.get("hub_commit") == commit and all(old.get(f) == v for f, v in expect.items()):
        return {}  # already the expectations: nothing changes
    if prev and prev.get("hub_commit") == commit and _counts(prev) == _counts(obs):
        runs = [*prev.get("runs", []), run][-5:]
        out.said.append(f"profile of {model_id}: {describe(obs)} confirmed by a second green run on hub commit "
                        f"{short}: now expected")
        return {**expect, "hub_commit": commit,
                "observed": {**record, "runs": runs, "agreeing_runs": int(prev.get("agreeing_runs", 1)) + 1}}
    last = prev.get("hub_commit") or old.get("hub_commit")
    if last and commit and last != commit:
        out.warnings.append(f"profile of {model_id}: new hub commit {short} (the profile's was {last[:12]}): its "
                            f"counts are observed anew")
    elif prev and prev.get("hub_commit") == commit:
        changed = "; ".join(f"{k}: {prev.get(k)!r} -> {obs.get(k)!r}" for k in EXPECTATIONS
                            if prev.get(k) != obs.get(k))
        out.warnings.append(f"profile of {model_id}: this green run on hub commit {short} measured other counts than "
                            f"the previous one ({changed}): not deterministic yet, not made expectations")
    out.said.append(f"profile of {model_id}: observed on hub commit {short}: {describe(obs)}; they become "
                    f"expectations when a second green run on {short} agrees (or with --update-profile)")
    return {"observed": {**record, "runs": [run], "agreeing_runs": 1}}


def differences_line(path: Path, model_id: str, diff: dict[str, dict[str, Any]]) -> str:
    """One line for the ledger: what this green run measured differently from the model's profile row."""
    items = "; ".join(f"{k}: {v['old']!r} -> {v['new']!r}" for k, v in sorted(diff.items()))
    return (f"profile row of {model_id} in {path} differs from this run (kept; --update-profile rewrites it): "
            f"{items}")

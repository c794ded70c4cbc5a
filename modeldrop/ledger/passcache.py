"""Gate passes across runs: `<report_dir>/pass_cache.json`.

Contract:
- `PassCache(path).record(gate, fingerprint, run_id, summary, parts=None, t=None)` appends a pass
  (newest first, at most `KEEP` per gate) and rewrites the file atomically under an flock, so two
  runs never lose each other's passes.
- `lookup(gate, fingerprint, max_age_s, now=None)` returns the newest pass of `gate` with exactly
  that fingerprint and no older than `max_age_s`, else None.
- `latest(gate, model_id=None)` returns the newest pass of `gate` (optionally of one model), for the
  "stale" / "changed" diagnostics; `matching(gate, fingerprint)` the newest with the fingerprint,
  whatever its age.
- Secrets given to the constructor are masked in what is stored.
- A missing or unreadable file is an empty cache (a corrupt cache never stops a run). An unreadable one is
  never replaced silently: at first sight it is moved aside to `pass_cache.json.unreadable-<UTC time>`
  (under the lock, after a second look) and `warn` is told so in one line.
- `summary` holds the gate's notes (`{"notes": {...}, "evidence": "..."}`) so a reused gate still
  contributes its measured facts (sizes, counts, instance id) to the ledger and the profile.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modeldrop.ledger.fingerprint import explain_change
from modeldrop.ledger.runfolder import atomic_write_json
from modeldrop.redaction import masked, redact_obj

KEEP = 20
VERSION = 1


@dataclass(frozen=True)
class PassRecord:
    """One recorded gate pass: when, in which run, for which fingerprint, with its evidence summary."""

    gate: str
    fingerprint: str
    time: float
    run_id: str
    summary: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the pass was recorded."""
        return (time.time() if now is None else now) - self.time

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PassRecord:
        return cls(gate=str(d["gate"]), fingerprint=str(d["fingerprint"]), time=float(d["time"]),
                   run_id=str(d.get("run_id", "")), summary=dict(d.get("summary") or {}),
                   parts=dict(d.get("parts") or {}))


class PassCache:
    """The pass cache file of one reports directory."""

    def __init__(self, path: Path, secrets: Iterable[str] = (), warn: Callable[[str], None] | None = None):
        self.path = path
        self._secrets = masked(secrets)
        self._warn = warn or (lambda line: sys.stderr.write(f"modeldrop: {line}\n"))
        self._held = False
        self._stuck = False  # unreadable and could not be moved aside: never overwritten

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._held:  # already ours (flock on a second descriptor would wait for ourselves)
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._held = True
            try:
                yield
            finally:
                self._held = False
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(the file's passes, None), ({}, None) when there is no file, or (None, why it is unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}, None
        except (OSError, ValueError) as e:
            return None, f"{type(e).__name__}: {e}"
        passes = data.get("passes", {}) if isinstance(data, dict) else None
        if not isinstance(passes, dict):
            return None, "not a pass cache (no `passes` object)"
        return passes, None

    def _set_aside(self) -> None:
        """Move an unreadable file aside (if it still is, under the lock) and say so in one line."""
        with self._locked():
            passes, why = self._read()
            if passes is not None:
                return  # another run replaced it meanwhile
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            aside = self.path.with_name(f"{self.path.name}.unreadable-{stamp}")
            try:
                os.replace(self.path, aside)
            except OSError as e:
                if not self._stuck:
                    self._warn(f"{self.path} is unreadable ({why}) and cannot be moved aside ({e}); no earlier pass "
                               "is reused and this run's passes are not kept: fix or remove the file")
                self._stuck = True
                return
        self._warn(f"{self.path} was unreadable ({why}); kept as {aside.name}, a new pass cache starts (no earlier "
                   "pass is reused)")

    def _load(self) -> dict[str, list[dict[str, Any]]]:
        """{gate: [pass dicts]}; anything malformed (gate entry or record) is left out, an unreadable file is set
        aside (see the module doc) and counts as empty."""
        passes, _ = self._read()
        if passes is None:
            self._set_aside()
            passes, _ = self._read()
            if passes is None:
                return {}
        return {g: [d for d in v if isinstance(d, dict)] for g, v in passes.items() if isinstance(v, list)}

    def records(self, gate: str) -> list[PassRecord]:
        """All stored passes of `gate`, newest first."""
        out = []
        for d in self._load().get(gate, []):
            try:
                out.append(PassRecord.from_dict(d))
            except (KeyError, TypeError, ValueError):
                continue
        return sorted(out, key=lambda r: r.time, reverse=True)

    def record(self, gate: str, fingerprint: str, run_id: str, summary: dict[str, Any] | None = None,
               parts: dict[str, Any] | None = None, t: float | None = None) -> PassRecord:
        """Store a pass of `gate` for `fingerprint` (atomic rewrite under a lock)."""
        rec = PassRecord(gate, fingerprint, time.time() if t is None else t, run_id,
                         redact_obj(dict(summary or {}), self._secrets), redact_obj(dict(parts or {}), self._secrets))
        with self._locked():
            passes = self._load()
            if self._stuck:
                return rec
            passes[gate] = [asdict(rec)] + passes.get(gate, [])[:KEEP - 1]
            atomic_write_json(self.path, {"version": VERSION, "passes": passes})
        return rec

    def lookup(self, gate: str, fingerprint: str, max_age_s: float, now: float | None = None) -> PassRecord | None:
        """The newest pass of `gate` with this fingerprint and age <= max_age_s, else None."""
        rec = self.matching(gate, fingerprint)
        if rec is not None and rec.age_s(now) <= max_age_s:
            return rec
        return None

    def matching(self, gate: str, fingerprint: str) -> PassRecord | None:
        """The newest pass of `gate` with this fingerprint, whatever its age."""
        return next((r for r in self.records(gate) if r.fingerprint == fingerprint), None)

    def latest(self, gate: str, model_id: str | None = None) -> PassRecord | None:
        """The newest pass of `gate` (of `model_id` when given, judged by its recorded parts)."""
        for r in self.records(gate):
            if model_id is None or r.parts.get("model_id") in (None, model_id):
                return r
        return None

    def fresh(self, gate: str, fingerprint: str, max_age_s: float, model_id: str | None = None,
              parts: dict[str, Any] | None = None) -> tuple[PassRecord | None, str]:
        """The newest pass of `gate` for `fingerprint` within `max_age_s`, or None and why not
        (too old, recorded for something that changed since — said in words from `parts` —, or never)."""
        rec = self.lookup(gate, fingerprint, max_age_s)
        if rec is not None:
            return rec, ""
        match = self.matching(gate, fingerprint)
        if match is not None:
            return None, (f"its last pass ({utc_minute(match.time)}, run {match.run_id}) is older than "
                          f"--pass-max-age {age_words(max_age_s)} (recorded {age_words(match.age_s())} ago)")
        latest = self.latest(gate, model_id)
        if latest is not None and parts is not None:
            return None, (f"its last pass ({utc_minute(latest.time)}, run {latest.run_id}) was "
                          f"{explain_change(latest.parts, parts)}")
        return None, "never passed for this fingerprint"


def age_words(seconds: float) -> str:
    """`45s`, `12m`, `30h`, `3d` (rounded) for ages and --pass-max-age."""
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 2 * 3600:
        return f"{s / 60:.0f}m"
    if s < 2 * 86400:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def utc_minute(t: float) -> str:
    """A time as `YYYY-mm-dd HH:MM` (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))

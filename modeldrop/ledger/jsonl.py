"""ledger.jsonl: one JSON object per line, one line per gate event, written as it happens.

Contract:
- `JsonlLedger.append(event, **fields)` writes one line `{"t": epoch, "time": ISO-UTC, "event": …, …}`,
  flushes and fsyncs it before returning, so a SIGKILL right after loses nothing already appended.
- Events the Ledger writes: `run_start`, `deselect`, `gate_start`, `item_fail`, `pass`, `fail`, `skip`,
  `reuse`, `resume_from`, `pass_cached`, `note`, `warning`, `strongest`, `signature`, `evidence`,
  `download_start`, `download_attempt`, `download_end`, `downloads_closed`, `bench`, `cleanup`, `profile_update`,
  `run_end`.
- Any secret given to the constructor is replaced by `***` in every line written.
- `read_jsonl(path)` returns the records, ignoring a torn last line.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modeldrop.redaction import masked, redact_obj


def iso_utc(t: float) -> str:
    """ISO-8601 UTC with seconds, e.g. 2026-11-27T14:02:11Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class JsonlLedger:
    """Append-only JSON-lines file; every append is flushed and fsynced."""

    def __init__(self, path: Path, secrets: Iterable[str] = ()):
        self.path = path
        self._secrets = masked(secrets)
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record and make it durable; returns the record written."""
        t = time.time()
        record = {"t": round(t, 3), "time": iso_utc(t), "event": event, **fields}
        line = json.dumps(redact_obj(record, self._secrets), default=str, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return record


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records of a ledger.jsonl (a torn last line is skipped)."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out

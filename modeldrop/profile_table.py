"""The model profiles as the guide's table (`model-drop --profiles`): one row per model, markdown.

`render(profiles)` takes a loaded profiles file (`profiles.load`) and returns the guide's "model profile" table
(Model ID, Instance ID, HF include, safetensor shard count, GGUF count, preflight disk threshold, notes) with the
fields the suite adds (status, files, shard pattern, required non-shard files, hub commit, topology). A count that
is an expectation shows as the number; one only observed so far as `9 (observed, 1 run)`; none as `TBD`, as the
guide writes it.
"""

from __future__ import annotations

from typing import Any

from modeldrop.profiles import EXPECTATIONS

COLUMNS = ("Model ID", "Instance ID", "Status", "HF include", "Safetensor shard count", "GGUF count", "Files",
           "Shard pattern", "Required non-shard files", "Preflight disk threshold", "Hub commit", "Topology", "Notes")


def _cell(value: Any) -> str:
    """Markdown-safe text of one cell (`|` escaped, newlines as spaces)."""
    if value is None or value == "" or value == []:
        return "TBD"
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _expectation(row: dict[str, Any], key: str) -> str:
    """An expectation as it stands: the confirmed value, else the observed one marked so, else TBD."""
    confirmed = row.get(EXPECTATIONS[key])
    if confirmed is not None:
        return _cell(confirmed)
    seen = (row.get("observed") or {}).get(key)
    if seen is None:
        return "TBD"
    runs = int((row.get("observed") or {}).get("agreeing_runs", 1))
    return f"{_cell(seen)} (observed, {runs} run{'s' if runs != 1 else ''})"


def row_cells(model: str, row: dict[str, Any]) -> list[str]:
    """One model's cells, in COLUMNS order."""
    commit = row.get("hub_commit") or (row.get("observed") or {}).get("hub_commit")
    threshold = f"{row['disk_threshold_gb']:g} GB" if row.get("disk_threshold_gb") is not None else None
    notes = " ".join(x for x in (row.get("notes"), f"(reason: {row['reason']})" if row.get("reason") else "") if x)
    return [_cell(model), _cell(row.get("instance_id")), _cell(row.get("status", "active")),
            _cell(row.get("include") or "all files") + (f"; exclude {_cell(row['exclude'])}" if row.get("exclude")
                                                         else ""),
            _expectation(row, "safetensors"), _expectation(row, "gguf"), _expectation(row, "files"),
            _expectation(row, "shard_pattern"), _expectation(row, "required_files"), _cell(threshold),
            _cell(commit[:12] if commit else None), _cell(row.get("topology")), _cell(notes)]


def render(profiles: dict[str, Any]) -> str:
    """The table of every model in a loaded profiles file (a line saying there is none when it is empty)."""
    models = profiles.get("models") or {}
    if not models:
        return "no model profiles yet (a row is added after a model's first green bootstrap)"
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row_cells(m, r)) + " |" for m, r in sorted(models.items())]
    return "\n".join(lines)

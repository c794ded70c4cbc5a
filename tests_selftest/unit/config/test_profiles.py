"""profiles.record_bootstrap: create/update a model's row after a green bootstrap, atomically, with a diff."""

from __future__ import annotations

import json
import os

import pytest

from modeldrop import profiles
from modeldrop.errors import InputError
from tests_selftest.support import REPO

UPDATES = {"instance_id": "inst-1", "include": ["*.safetensors", "*.json"], "expected_safetensors": 3,
           "expected_gguf": 0, "total_size_bytes": 5_000_000_000, "disk_threshold_gb": 6.5,
           "notes": "green bootstrap run-1 on 2 node(s)", "status": "active"}


def test_creates_the_file_and_row(tmp_path):
    path = tmp_path / "model_profiles.json"
    diff = profiles.record_bootstrap(path, "org/m", UPDATES)
    row = profiles.load(path)["models"]["org/m"]
    assert {k: row[k] for k in UPDATES} == UPDATES and row["updated"].endswith("Z")
    assert diff["instance_id"] == {"old": None, "new": "inst-1"} and "updated" in diff
    left = [p.name for p in tmp_path.iterdir() if p != profiles.lock_path(path)]
    assert left == ["model_profiles.json"]  # no temp file left


def test_diff_only_what_changed_and_keeps_other_rows(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": 1, "models": {
        "org/m": {"status": "active", "instance_id": "inst-0", "reference": {"tps": 12.5}},
        "org/other": {"status": "blocked", "reason": "x"}}}))
    diff = profiles.record_bootstrap(path, "org/m", {"instance_id": "inst-1", "expected_gguf": 0})
    assert set(diff) == {"instance_id", "expected_gguf", "updated"}
    data = json.loads(path.read_text())
    assert data["models"]["org/other"] == {"status": "blocked", "reason": "x"}
    assert data["models"]["org/m"]["reference"] == {"tps": 12.5}
    before = path.stat().st_mtime_ns
    assert profiles.record_bootstrap(path, "org/m", {"instance_id": "inst-1"}) == {}
    assert path.stat().st_mtime_ns == before  # nothing changed: file untouched


@pytest.mark.parametrize("status", ["watch", "blocked", "deprecated"])
def test_operator_status_is_kept(tmp_path, status):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"models": {"org/m": {"status": status}}}))
    profiles.record_bootstrap(path, "org/m", UPDATES)
    assert profiles.load(path)["models"]["org/m"]["status"] == status


def test_invalid_update_is_refused_and_file_untouched(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"models": {"org/m": {"status": "active"}}}))
    before = path.read_text()
    with pytest.raises(InputError):
        profiles.record_bootstrap(path, "org/m", {"expected_safetensors": "three"})
    assert path.read_text() == before


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"models": {"org/m": {"status": "active"}}}))
    before = path.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        profiles.record_bootstrap(path, "org/m", UPDATES)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p != profiles.lock_path(path)] == ["p.json"]


def test_row_written_once_then_only_differences(tmp_path):
    """First green bootstrap writes the row; later runs report differences and leave it; --update-profile rewrites."""
    path = tmp_path / "p.json"
    diff, written = profiles.after_green_bootstrap(path, "org/m", UPDATES)
    assert written and diff["expected_safetensors"] == {"old": None, "new": 3}
    first = path.read_text()
    later = {**UPDATES, "expected_safetensors": 4, "notes": "another note", "status": "active"}
    diff, written = profiles.after_green_bootstrap(path, "org/m", later)
    assert not written and diff == {"expected_safetensors": {"old": 3, "new": 4}}
    assert path.read_text() == first
    diff, written = profiles.after_green_bootstrap(path, "org/m", later, rewrite=True)
    assert written and profiles.load(path)["models"]["org/m"]["expected_safetensors"] == 4


def test_shipped_profile_follows_the_guide():
    """The Qwen3.5 row places as the guide does (Pipeline + MlxRing), instance id org--name, no RDMA."""
    path = REPO / "model_profiles.json"
    row = profiles.load(path)["models"]["mlx-community/Qwen3.5-122B-A10B-4bit"]
    assert (row["sharding"], row["instance_meta"]) == ("Pipeline", "MlxRing")
    assert row["instance_id"] == "mlx-community--Qwen3.5-122B-A10B-4bit"
    assert "RDMA" not in json.dumps(row) and "Jaccl" not in json.dumps(row)
    assert row["reference"]["decode_tps"]["512"] == 52.0 and row["reference"]["p95_latency_s"]["2"] == 10.37

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
    """First green bootstrap writes the row; later runs report differences and leave it (gaining only fields it
    lacks); --update-profile rewrites."""
    path = tmp_path / "p.json"
    out = profiles.after_green_bootstrap(path, "org/m", UPDATES)
    assert out.written and out.diff["instance_id"] == {"old": None, "new": "inst-1"}
    first = path.read_text()
    later = {**UPDATES, "total_size_bytes": 6_000_000_000, "notes": "another note", "status": "active"}
    out = profiles.after_green_bootstrap(path, "org/m", later)
    assert not out.written and out.differences == {"total_size_bytes": {"old": 5_000_000_000, "new": 6_000_000_000}}
    assert path.read_text() == first
    out = profiles.after_green_bootstrap(path, "org/m", {**later, "topology": "2 nodes, MlxRing/Pipeline"})
    assert out.written and set(out.diff) == {"topology", "updated"}  # a field the row lacks is filled in
    out = profiles.after_green_bootstrap(path, "org/m", later, rewrite=True)
    assert out.written and profiles.load(path)["models"]["org/m"]["total_size_bytes"] == 6_000_000_000


OBS = {"hub_commit": "a" * 40, "safetensors": 9, "gguf": 0, "files": 14, "total_size_bytes": 10,
       "shard_pattern": "model-*-of-00009.safetensors", "required_files": ["config.json"], "run": "run-1"}


def test_counts_become_expectations_only_when_a_second_run_on_the_same_commit_agrees(tmp_path):
    path = tmp_path / "p.json"
    out = profiles.after_green_bootstrap(path, "org/m", {"status": "active"}, observation=OBS)
    row = profiles.load(path)["models"]["org/m"]
    assert "expected_safetensors" not in row and row["observed"]["agreeing_runs"] == 1 and not out.warnings
    assert out.said == ["profile of org/m: observed on hub commit aaaaaaaaaaaa: 9 safetensors, 0 gguf, 14 files "
                        "(model-*-of-00009.safetensors); they become expectations when a second green run on "
                        "aaaaaaaaaaaa agrees (or with --update-profile)"]
    # the same commit, other counts: not deterministic, said as a warning, the observation restarts
    out = profiles.after_green_bootstrap(path, "org/m", {}, observation={**OBS, "files": 15, "run": "run-2"})
    assert out.warnings and "measured other counts than the previous one (files: 14 -> 15)" in out.warnings[0]
    assert "expected_files" not in profiles.load(path)["models"]["org/m"]
    out = profiles.after_green_bootstrap(path, "org/m", {}, observation={**OBS, "files": 15, "run": "run-3"})
    row = profiles.load(path)["models"]["org/m"]
    assert (row["expected_safetensors"], row["expected_gguf"], row["expected_files"]) == (9, 0, 15)
    assert row["hub_commit"] == "a" * 40 and row["observed"]["runs"] == ["run-2", "run-3"]
    assert "confirmed by a second green run" in out.said[0]
    # a new hub commit: said as such, the expectations of the old one kept until it is confirmed
    out = profiles.after_green_bootstrap(path, "org/m", {}, observation={**OBS, "hub_commit": "b" * 40})
    assert out.warnings == ["profile of org/m: new hub commit bbbbbbbbbbbb (the profile's was aaaaaaaaaaaa): its "
                            "counts are observed anew"]
    row = profiles.load(path)["models"]["org/m"]
    assert row["hub_commit"] == "a" * 40 and row["expected_files"] == 15 and row["observed"]["hub_commit"] == "b" * 40


def test_update_profile_makes_one_runs_counts_the_expectations(tmp_path):
    path = tmp_path / "p.json"
    out = profiles.after_green_bootstrap(path, "org/m", {"status": "active"}, observation=OBS, rewrite=True)
    row = profiles.load(path)["models"]["org/m"]
    assert row["expected_safetensors"] == 9 and row["hub_commit"] == "a" * 40 and "--update-profile" in out.said[0]
    assert profiles.after_green_bootstrap(path, "org/m", {}, observation=OBS).diff == {}  # already expected


def test_new_profile_fields_are_validated(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"models": {"org/m": {"required_files": ["config.json", 3]}}}))
    with pytest.raises(InputError, match=r"required_files: expected a list of non-empty strings"):
        profiles.load(path)
    path.write_text(json.dumps({"models": {"org/m": {"expected_files": "many"}}}))
    with pytest.raises(InputError, match=r"expected_files: invalid value 'many'"):
        profiles.load(path)


def test_shipped_profile_follows_the_guide():
    """The Qwen3.5 row places as the guide does (Pipeline + MlxRing), instance id org--name, no RDMA."""
    path = REPO / "model_profiles.json"
    row = profiles.load(path)["models"]["mlx-community/Qwen3.5-122B-A10B-4bit"]
    assert (row["sharding"], row["instance_meta"]) == ("Pipeline", "MlxRing")
    assert row["instance_id"] == "mlx-community--Qwen3.5-122B-A10B-4bit"
    assert "RDMA" not in json.dumps(row) and "Jaccl" not in json.dumps(row)
    assert row["reference"]["decode_tps"]["512"] == 52.0 and row["reference"]["p95_latency_s"]["2"] == 10.37

"""`model-drop --profiles`: the profiles file as the guide's table, expectations and observations told apart; the
file found as a run finds it (--profile-path, PROFILE_PATH in the environment or the env file); a bad file is one
ERROR line."""

from __future__ import annotations

import json

from modeldrop import cli, profile_table, profiles
from tests_selftest.support import REPO

ROWS = {"version": 1, "models": {
    "org/confirmed": {"status": "active", "instance_id": "org--confirmed", "include": ["*.safetensors", "*.json"],
                      "expected_safetensors": 9, "expected_gguf": 0, "expected_files": 14,
                      "shard_pattern": "model-*-of-00009.safetensors", "required_files": ["config.json"],
                      "hub_commit": "c" * 40, "disk_threshold_gb": 70.4, "topology": "2 nodes, MlxRing/Pipeline",
                      "notes": "a | pipe"},
    "org/new": {"status": "watch", "reason": "new arch", "observed": {"hub_commit": "d" * 40, "safetensors": 3,
                                                                      "gguf": 0, "files": 7, "agreeing_runs": 1}},
}}


def test_the_table_tells_expectations_from_observations():
    lines = profile_table.render(ROWS).splitlines()
    assert lines[0].startswith("| Model ID | Instance ID | Status | HF include | Safetensor shard count | GGUF count |")
    assert len(lines) == 4 and all(ln.count(" | ") == len(profile_table.COLUMNS) - 1 for ln in lines[2:]), lines
    confirmed = lines[2].split(" | ")
    assert confirmed[4:9] == ["9", "0", "14", "model-*-of-00009.safetensors", "config.json"]
    assert confirmed[3] == "*.safetensors, *.json" and confirmed[9] == "70.4 GB" and confirmed[10] == "c" * 12
    assert lines[2].endswith("a \\| pipe |")  # a pipe in a note does not break the table
    new = lines[3].split(" | ")
    assert new[2] == "watch" and new[4:7] == ["3 (observed, 1 run)", "0 (observed, 1 run)", "7 (observed, 1 run)"]
    assert new[7] == "TBD" and new[10] == "d" * 12 and "(reason: new arch)" in lines[3]
    assert profile_table.render({"models": {}}).startswith("no model profiles yet")


def test_every_profile_field_of_the_guide_has_its_column():
    for column in ("Model ID", "Instance ID", "HF include", "Safetensor shard count", "GGUF count",
                   "Preflight disk threshold", "Notes", "Files", "Shard pattern", "Required non-shard files",
                   "Topology"):
        assert column in profile_table.COLUMNS


def test_model_drop_profiles_finds_the_file_as_a_run_does(tmp_path, monkeypatch, capsys):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(ROWS))
    (tmp_path / "run.env").write_text(f"PROFILE_PATH={path}\n")
    monkeypatch.delenv("PROFILE_PATH", raising=False)
    assert cli.model_drop_main(["--profiles", "--env-file", str(tmp_path / "run.env")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"model profiles: {path}\n") and "| org/confirmed | org--confirmed |" in out
    monkeypatch.setenv("PROFILE_PATH", str(tmp_path / "other.json"))
    assert cli.model_drop_main(["--profiles"]) == 0
    assert "no model profiles yet" in capsys.readouterr().out
    assert cli.model_drop_main(["--profiles", "--profile-path", str(REPO / "model_profiles.json")]) == 0
    assert "mlx-community/Qwen3.5-122B-A10B-4bit" in capsys.readouterr().out
    path.write_text('{"models": {"org/m": {"expected_files": "many"}}}')
    assert cli.model_drop_main(["--profiles", "--profile-path", str(path)]) == 4
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and err.count("\n") == 1 and "expected_files" in err
    assert profiles.load(REPO / "model_profiles.json")  # the shipped table stays valid

"""Where state goes (modeldrop.statedirs): run folders and profiles for a checkout and for an installed suite, the
checkout's tracked table as a seed, the user's last run, and one-line errors (exit 4) for dirs and files that cannot
be used, with nothing overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeldrop import config, profiles, statedirs
from modeldrop.errors import InputError
from tests_selftest.support import REPO
from tests_selftest.support.plugin_kit import BASE, jsonl, latest, make_suite

MODEL = "org/tiny-model"
ENV = {"MODEL_ID": MODEL, "NODES": "studio1,studio2"}


@pytest.fixture
def user(tmp_path, monkeypatch):
    """Fresh per-user data and config dirs (Linux: XDG)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def checkout(root: Path, rows: dict | None = None) -> Path:
    """A checkout-like dir with a tracked model_profiles.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_profiles.json").write_text(json.dumps({"version": 1, "models": rows or {}}))
    return root


def test_this_checkout_runs_its_own_suite():
    assert statedirs.own_checkout() == REPO and statedirs.suite_root() == REPO
    assert not statedirs.is_installed_suite(REPO)
    assert statedirs.is_installed_suite(statedirs.INSTALLED_SUITE / "gates")


def test_a_checkout_keeps_reports_here_and_writes_the_users_profile(user):
    root = checkout(user / "co", {MODEL: {"sharding": "Tensor"}})
    cfg = config.load_config({}, environ=ENV, checkout=root)
    assert cfg.report_dir == Path("reports")
    assert cfg.profile_path == user / "config" / "modeldrop" / "model_profiles.json"
    assert cfg.profile_seed == root / "model_profiles.json"
    assert cfg.profile == {"sharding": "Tensor"} and cfg.sharding == "Tensor"  # read from the seed
    cfg.profile_path.write_text(json.dumps({"models": {MODEL: {"sharding": "Pipeline"}}}))
    assert config.load_config({}, environ=ENV, checkout=root).sharding == "Pipeline"  # the user's row wins


def test_an_installed_suite_keeps_state_in_the_users_dirs(user):
    cfg = config.load_config({}, environ=ENV, checkout=None)
    assert cfg.report_dir == user / "data" / "modeldrop" / "reports" and cfg.report_dir.is_dir()
    assert cfg.profile_path == user / "config" / "modeldrop" / "model_profiles.json" and cfg.profile_seed is None
    assert cfg.values["RUN_REPORT_DIR"] == str(cfg.report_dir)  # what the ledger records
    given = config.load_config({"RUN_REPORT_DIR": str(user / "runs"), "PROFILE_PATH": str(user / "p.json")},
                               environ=ENV, checkout=None)
    assert (given.report_dir, given.profile_path) == (user / "runs", user / "p.json")


def test_the_guides_profile_path_naming_the_tracked_table_keeps_it_a_seed(user, monkeypatch):
    root = checkout(user / "co")
    monkeypatch.chdir(root)
    files = statedirs.profile_files("model_profiles.json", root)
    assert files == statedirs.ProfileFiles(user / "config" / "modeldrop" / "model_profiles.json",
                                           root / "model_profiles.json", default=True)
    assert statedirs.profile_files("mine.json", root) == statedirs.ProfileFiles(Path("mine.json"))


def test_row_file_is_where_the_row_lives(tmp_path):
    mine, seed = tmp_path / "mine.json", tmp_path / "seed.json"
    seed.write_text(json.dumps({"models": {"a/b": {}, "c/d": {}}}))
    mine.write_text(json.dumps({"models": {"c/d": {}}}))
    assert profiles.row_file(mine, seed, "a/b") == seed
    assert profiles.row_file(mine, seed, "c/d") == mine
    assert profiles.row_file(mine, seed, "x/y") == mine and profiles.row_file(mine, None, "a/b") == mine


def test_profile_path_in_a_missing_folder_is_one_line(user):
    path = user / "no" / "such" / "profiles.json"
    with pytest.raises(InputError) as e:
        config.load_config({}, environ={**ENV, "PROFILE_PATH": str(path)})
    msg = str(e.value)
    assert msg.startswith("environment (PROFILE_PATH): ") and "\n" not in msg
    assert f"folder {path.parent} does not exist" in msg and f"mkdir -p {path.parent}" in msg
    assert not path.parent.exists()


@pytest.mark.parametrize("which", ["user", "seed"])
def test_a_profile_file_that_is_not_json_is_one_line_and_kept(user, which):
    root = checkout(user / "co")
    bad = root / "model_profiles.json" if which == "seed" else user / "config" / "modeldrop" / "model_profiles.json"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text('{"models": {"a/b": {},}}')
    with pytest.raises(InputError) as e:
        config.load_config({}, environ=ENV, checkout=root)
    assert str(e.value).startswith(f"{bad}: invalid JSON at line 1") and "move it aside" in str(e.value)
    assert bad.read_text() == '{"models": {"a/b": {},}}'


def test_no_writable_data_or_config_dir_is_one_line(user):
    blocker = user / "a-file"
    blocker.write_text("")
    env = {**ENV, "XDG_DATA_HOME": str(blocker / "data")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(blocker / "data"))
        with pytest.raises(InputError) as e:
            config.load_config({}, environ=env, checkout=None)
        reports = blocker / "data" / "modeldrop" / "reports"
        assert f"the per-user data dir for run folders {reports} cannot be created" in str(e.value)
        assert "set RUN_REPORT_DIR (or --report-dir)" in str(e.value)
        assert config.load_config({"RUN_REPORT_DIR": str(user / "r")}, environ=env, checkout=None)  # the way out
        assert statedirs.record_last_run(user).startswith(f"could not record the last run in {blocker}/data")
        mp.setenv("XDG_CONFIG_HOME", str(blocker / "config"))
        with pytest.raises(InputError) as e:
            config.load_config({"RUN_REPORT_DIR": str(user / "r")}, environ=env, checkout=None)
        assert "the per-user config dir" in str(e.value) and "set PROFILE_PATH (or --profile-path)" in str(e.value)


def test_last_run_is_the_newest_folder_wherever_it_went(user):
    assert statedirs.last_run() is None
    folder = user / "anywhere" / "20260101T000000Z-org--m"
    folder.mkdir(parents=True)
    assert statedirs.record_last_run(folder) is None and statedirs.last_run() == folder
    folder.rmdir()
    assert statedirs.last_run() is None


def test_a_checkout_run_writes_the_users_profile_and_the_seed_only_on_update(pytester, user):
    """A first green run from a checkout writes the user's file; the tracked table is the seed, rewritten only by
    --update-profile of its own row."""
    make_suite(pytester)
    (pytester.path / "test.env").write_text("NODES=studio1,studio2\nRUN_REPORT_DIR=reports\n")
    seed = checkout(pytester.path, {"other/model": {"status": "watch"}}) / "model_profiles.json"
    before = seed.read_text()
    assert pytester.runpytest(*BASE).ret == 0
    mine = user / "config" / "modeldrop" / "model_profiles.json"
    assert json.loads(mine.read_text())["models"][MODEL]["status"] == "active" and seed.read_text() == before
    assert statedirs.last_run() == latest(pytester)
    mine.unlink()
    seed.write_text(json.dumps({"models": {MODEL: {"status": "active", "expected_safetensors": 9}}}))
    before = seed.read_text()
    assert pytester.runpytest(*BASE).ret == 0
    assert seed.read_text() == before and not mine.exists()  # the seed's row: differences reported, nothing written
    assert any("instance_id: None -> 'org--tiny-model'" in r["text"] and "--update-profile" in r["text"]
               for r in jsonl(latest(pytester)) if r["event"] == "warning")
    assert pytester.runpytest(*BASE, "--update-profile").ret == 0
    row = json.loads(seed.read_text())["models"][MODEL]
    assert row["instance_id"] == "org--tiny-model" and row["expected_safetensors"] == 9 and not mine.exists()

"""The HF_* settings operators already use: the allow-list passed to every node's hf, HF_EXCLUDE, the worker
count and the download's wait-and-retry options; an HF_* key outside the list is one line naming the allowed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeldrop import config
from modeldrop.download import hf_download_argv, hub_env, plan_download
from modeldrop.errors import InputError
from modeldrop.hub import ExpectedFile, ExpectedManifest, HubExpectation, filter_exclude


def load(tmp_path: Path, env_text: str, environ: dict[str, str] | None = None) -> config.RunConfig:
    prof = tmp_path / "profiles.json"
    prof.write_text(json.dumps({"version": 1, "models": {}}))
    env_file = tmp_path / "model_drop.env"
    env_file.write_text('MODEL_ID="org/name"\nNODE1="local"\n' + env_text)
    return config.load_config({}, environ={"PROFILE_PATH": str(prof), **(environ or {})}, env_file=env_file)


def test_allowed_hf_settings_reach_the_plan_and_each_is_documented(tmp_path):
    cfg = load(tmp_path, 'HF_XET_HIGH_PERFORMANCE=1\nHF_HUB_DOWNLOAD_TIMEOUT="60"\nHF_HOME="~/hf-home"\n'
                         "HF_HUB_DISABLE_XET=no\nHF_HUB_ENABLE_HF_TRANSFER=true\nHF_HUB_ETAG_TIMEOUT=30\n")
    env = hub_env(cfg)
    assert env == {"HF_XET_HIGH_PERFORMANCE": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "60", "HF_HOME": "~/hf-home",
                   "HF_HUB_DISABLE_XET": "0", "HF_HUB_ENABLE_HF_TRANSFER": "1", "HF_HUB_ETAG_TIMEOUT": "30"}
    plan = plan_download(cfg, 1, HubExpectation(manifest=ExpectedManifest("c" * 40, {})))
    assert dict(plan.env) == env
    assert "HF_XET_CACHE" not in hub_env(load(tmp_path, ""))  # unset: not sent at all
    example = (Path(config.__file__).parents[1] / "config" / "model_drop.env.example").read_text()
    for key in config.HF_ENV_KEYS:
        opt = config.OPTION_BY_KEY[key]
        assert len(opt.help) > 30 and f"# {key}=" in example and "passed as is to every node's hf" in example


def test_every_allowed_name_is_one_huggingface_hub_reads():
    """The allow-list holds the real names: each is read by the installed huggingface_hub or hf_xet."""
    import huggingface_hub.constants as c

    source = Path(c.__file__).read_text()
    for key in config.HF_ENV_KEYS:
        assert f'"{key}"' in source, key


def test_an_hf_key_outside_the_allow_list_names_it_and_the_allowed_ones(tmp_path):
    with pytest.raises(InputError) as e:
        load(tmp_path, "HF_HUB_OFFLINE=1\n")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'model_drop.env'}:3: HF_HUB_OFFLINE is not an hf setting") and "\n" not in msg
    assert all(k in msg for k in config.HF_ENV_KEYS) and "did you mean" not in msg
    assert "HF_TOKEN" in msg and "HF_EXCLUDE" in msg  # modeldrop's own HF_ keys are named as such
    cfg = load(tmp_path, "HF_HOME=~/h\n")  # the report that started this: HF_HOME is no longer refused
    assert cfg.hf_home == "~/h"


def test_bad_hf_values_are_one_line_naming_file_and_line(tmp_path):
    for line, needle in (("HF_HOME=relative/dir", "(HF_HOME): path 'relative/dir' must be absolute"),
                         ("HF_HUB_DOWNLOAD_TIMEOUT=soon", "(HF_HUB_DOWNLOAD_TIMEOUT): invalid count 'soon'"),
                         ("HF_XET_HIGH_PERFORMANCE=maybe", "(HF_XET_HIGH_PERFORMANCE): invalid boolean 'maybe'"),
                         ("HF_EXCLUDE=-rf", "(HF_EXCLUDE): invalid hf download pattern '-rf'"),
                         ("DOWNLOAD_ATTEMPTS=0", "(DOWNLOAD_ATTEMPTS): invalid count 0; expected 1 or more")):
        with pytest.raises(InputError) as e:
            load(tmp_path, line + "\n")
        assert needle in str(e.value) and ":3 (" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_node_paths_come_from_the_env_file_only(tmp_path):
    """This shell's HF_HOME is this machine's: it is not sent to the nodes; the env file's is."""
    cfg = load(tmp_path, "", environ={"HF_HOME": "/Users/me/.cache/hf", "HF_XET_HIGH_PERFORMANCE": "1"})
    assert cfg.hf_home is None and hub_env(cfg) == {"HF_XET_HIGH_PERFORMANCE": "1"}
    cfg = load(tmp_path, "HF_HOME=/srv/hf\n", environ={"HF_HOME": "/Users/me/.cache/hf"})
    assert hub_env(cfg)["HF_HOME"] == "/srv/hf"


def test_exclude_and_workers_reach_hf_and_the_expected_files(tmp_path):
    cfg = load(tmp_path, 'HF_EXCLUDE="original/*, *.bin"\nHF_MAX_WORKERS=16\nDOWNLOAD_ATTEMPTS=5\n'
                         "DOWNLOAD_BACKOFF_S=2m\n")
    assert cfg.exclude == ("original/*", "*.bin") and cfg.hf_max_workers == 16
    manifest = ExpectedManifest("c" * 40, {p: ExpectedFile(1, None, None) for p in (
        "config.json", "model.safetensors", "original/consolidated.pth", "pytorch_model.bin")})
    plan = plan_download(cfg, 1, HubExpectation(manifest=manifest.filtered((), cfg.exclude)))
    assert (plan.exclude, plan.max_workers, plan.attempts, plan.backoff_s) == (cfg.exclude, 16, 5, 120.0)
    assert plan.expected_bytes == 2
    argv = hf_download_argv("hf", "o/n", "/d", (), None, plan.exclude, plan.max_workers)
    assert argv[4:] == ["--exclude=original/*", "--exclude=*.bin", "--max-workers=16", "--format", "json"]
    assert filter_exclude(["a/b.bin", "a/c.json", "original/x"], ["*.bin", "original/"]) == ["a/c.json"]
    defaults = load(tmp_path, "")
    assert (defaults.download_attempts, defaults.download_backoff_s, defaults.exclude) == (3, 30.0, ())

"""Configuration: precedence, per-node keys, profile defaults, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from modeldrop import config, profiles, validate
from modeldrop.errors import InputError
from tests_selftest.support import DATA, REPO

BASE = {"MODEL_ID": "mlx-community/Qwen3.5-122B-A10B-4bit", "NODES": "studio1,studio2"}


def load(cli=None, environ=None, env_text=None, tmp_path: Path | None = None, profile=None):
    """load_config with an optional env file and profile file written to tmp_path."""
    env_file = None
    environ = dict(environ or {})
    if tmp_path is not None:
        prof = tmp_path / "profiles.json"
        prof.write_text(json.dumps(profile or {"version": 1, "models": {}}))
        environ.setdefault("PROFILE_PATH", str(prof))
    if env_text is not None:
        env_file = tmp_path / "model_drop.env"
        env_file.write_text(env_text)
    return config.load_config(cli or {}, environ=environ, env_file=env_file)


def test_precedence_cli_over_environment_over_env_file(tmp_path):
    env_text = "MODEL_ID=a/from-file\nNODES=local\nEXO_API_PORT=1111\nHF_INCLUDE=*.json\n"
    cfg = load({"MODEL_ID": "a/from-cli"}, {"EXO_API_PORT": "2222"}, env_text, tmp_path)
    assert cfg.model_id == "a/from-cli"
    assert cfg.api_port == 2222
    assert cfg.include == ("*.json",)
    assert cfg.sources["MODEL_ID"] == "--model" and cfg.sources["EXO_API_PORT"] == "environment"
    assert cfg.sources["HF_INCLUDE"].endswith("model_drop.env:4")


def test_per_node_keys_and_defaults(tmp_path):
    env_text = "NODE1=studio1\nNODE2=me@10.0.0.2:2222\nMODEL_DIR_NODE2=~/Models/a--b\nHF_CMD_NODE2=/usr/local/bin/hf\n"
    cfg = load({"MODEL_ID": "a/b"}, {}, env_text, tmp_path)
    assert [n.target for n in cfg.nodes] == ["studio1", "me@10.0.0.2:2222"]
    assert cfg.node(1).model_dir == "~/.exo/models/a--b"
    assert cfg.node(2).model_dir == "~/Models/a--b" and cfg.node(2).models_parent == "~/Models"
    assert cfg.node(2).hf_cmd == "/usr/local/bin/hf"
    assert cfg.node(1).hf_cmd == config.OPTION_BY_KEY["HF_CMD"].default


def test_profile_supplies_include_counts_and_threshold_but_operator_wins(tmp_path):
    profile = {"version": 1, "models": {"a/b": {"status": "active", "include": ["*.safetensors", "*.json"],
                                               "expected_safetensors": 3, "disk_threshold_gb": 80}}}
    cfg = load({"MODEL_ID": "a/b", "NODES": "local"}, {}, None, tmp_path, profile)
    assert cfg.include == ("*.safetensors", "*.json")
    assert cfg.expected_safetensors == 3
    assert cfg.min_free_bytes == 80_000_000_000
    cfg = load({"MODEL_ID": "a/b", "NODES": "local"}, {"EXPECTED_SAFE_TENSOR_COUNT": "5"}, None, tmp_path, profile)
    assert cfg.expected_safetensors == 5


@pytest.mark.parametrize("bad", ["../x", "org/x;rm -rf ~", "org", "", "a/..", "a--b/c", "a/b c", "-a/b"])
def test_bad_model_ids_are_one_line_errors(bad):
    with pytest.raises(InputError) as e:
        config.load_config({"MODEL_ID": bad, "NODES": "local"}, environ={})
    msg = str(e.value)
    assert "\n" not in msg and "--model" in msg and ("org/name" in msg or "no model" in msg)


@pytest.mark.parametrize("bad", ["a b", "h;ls", "u@h:99999", "$(x)", "u@h`id`", "u@", "@h", "a,a"])
def test_bad_node_specs_are_one_line_errors(bad):
    with pytest.raises(InputError) as e:
        config.load_config({"MODEL_ID": "a/b", "NODES": bad}, environ={})
    assert "\n" not in str(e.value) and "--nodes" in str(e.value)


def test_good_node_specs():
    for spec in ["local", "studio-1", "me@10.0.0.2", "me@host.lan:2222", "me@[fe80::1]:22"]:
        assert validate.node_spec(spec) == spec


def test_malformed_and_unknown_env_lines_name_file_and_line(tmp_path):
    with pytest.raises(InputError, match=r"model_drop.env:2: malformed line"):
        load({}, {}, "MODEL_ID=a/b\nthis is not a key\n", tmp_path)
    with pytest.raises(InputError, match=r"model_drop.env:1: unknown key 'MODLE_ID'"):
        load({}, {}, "MODLE_ID=a/b\n", tmp_path)


@pytest.mark.parametrize("line", ["HF_TOKEN hf_SecretValue123", "hf_SecretValue123", "HF_TOKEN: hf_SecretValue123"])
def test_malformed_env_line_is_not_echoed(tmp_path, line):
    with pytest.raises(InputError, match=r"model_drop.env:2: malformed line") as e:
        load({}, {}, f"MODEL_ID=a/b\n{line}\n", tmp_path)
    assert "SecretValue123" not in str(e.value)


def test_bad_values_name_the_key(tmp_path):
    with pytest.raises(InputError, match="EXO_API_PORT"):
        load({"MODEL_ID": "a/b", "NODES": "local"}, {"EXO_API_PORT": "http"}, None, tmp_path)
    with pytest.raises(InputError, match="MODEL_DIR_NODE1"):
        load({"MODEL_ID": "a/b", "NODES": "local"}, {"MODEL_DIR_NODE1": "relative/dir"}, None, tmp_path)
    with pytest.raises(InputError, match="'..'"):
        load({"MODEL_ID": "a/b", "NODES": "local"}, {"MODEL_DIR_NODE1": "/a/../etc"}, None, tmp_path)
    with pytest.raises(InputError, match="EXO_SHARDING"):
        load({"MODEL_ID": "a/b", "NODES": "local"}, {"EXO_SHARDING": "Diagonal"}, None, tmp_path)


def test_env_file_quotes_comments_and_export(tmp_path):
    cfg = load({}, {}, "# c\nexport MODEL_ID='a/b'\nNODES=\"local\"  \nHF_INCLUDE=*.json # trailing\n", tmp_path)
    assert cfg.model_id == "a/b" and cfg.nodes[0].target == "local" and cfg.include == ("*.json",)


def test_secrets_are_redacted(tmp_path):
    cfg = load({"MODEL_ID": "a/b", "NODES": "local"}, {"HF_TOKEN": "hf_secret"}, None, tmp_path)
    assert "hf_secret" not in json.dumps(cfg.redacted())


def test_invalid_profile_json_is_one_line(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"models": {"a/b": {"status": "activ"}}}')
    with pytest.raises(InputError, match=r"status: invalid value 'activ'"):
        profiles.load(bad)
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"invalid JSON at line 1"):
        profiles.load(bad)
    bad.write_text('{"models": {"a/b": {"sharding": 3}}}')
    with pytest.raises(InputError, match=r"sharding: invalid value 3"):
        profiles.load(bad)


def test_status_gate():
    assert profiles.status_gate(None, "a/b", allow_blocked=False) is None
    with pytest.raises(InputError, match="blocked"):
        profiles.status_gate({"status": "blocked", "reason": "bad shards"}, "a/b", allow_blocked=False)
    assert profiles.status_gate({"status": "blocked"}, "a/b", allow_blocked=True) is None
    with pytest.raises(InputError, match="deprecated"):
        profiles.status_gate({"status": "deprecated"}, "a/b", allow_blocked=True)
    assert "watch" in profiles.status_gate({"status": "watch"}, "a/b", allow_blocked=False)


def test_example_env_file_lists_every_key():
    text = (REPO / "config" / "model_drop.env.example").read_text()
    for opt in config.OPTIONS:
        assert f"# {opt.key}=" in text, opt.key
    for key in config.PER_NODE_KEYS:
        assert f"# {key}1=" in text, key


# --- the guide's env file, as operators write it ----------------------------------------------------
GUIDE_ENV = DATA / "seed-model_drop.env"


def test_guide_env_file_is_read_verbatim(tmp_path):
    """The bootstrap guide's config block: quotes, trailing comments, ${MODEL_INSTANCE_ID}, its extra keys."""
    cfg = config.load_config({}, environ={"PROFILE_PATH": str(tmp_path / "none.json")}, env_file=GUIDE_ENV)
    assert cfg.model_id == "organization/model-name" and cfg.instance_id == "organization--model-name"
    assert [n.target for n in cfg.nodes] == ["user1@node1-host", "user2@node2-host"]
    assert cfg.node(2).model_dir == "/Users/user2/Models/organization--model-name"
    assert cfg.node(1).hf_cmd == "/path/to/user1/hf"  # the trailing "# e.g." comment is not part of it
    assert cfg.expected_safetensors is None and cfg.expected_gguf is None  # "" # optional: …
    assert cfg.libp2p_port == 51001 and cfg.namespace == "my-cluster" and cfg.api_port == 52415
    assert cfg.node(1).exo_log_dir == "~/exo-bootstrap-logs"
    assert cfg.report_dir == Path("artifacts/bootstrap-runs")
    assert cfg.sources["EXO_LIBP2P_PORT"].endswith("seed-model_drop.env:13")
    assert (cfg.sharding, cfg.instance_meta) == ("Pipeline", "MlxRing")


def test_variable_expansion_export_and_single_quotes(tmp_path):
    text = ("export MODEL_ID=\"a/b\"\nNODES=local\nROOT_UNUSED=1\n")
    with pytest.raises(InputError, match=r"model_drop.env:3: unknown key 'ROOT_UNUSED'"):
        load({}, {}, text, tmp_path)
    text = "MODEL_ID=a/b\nNODES=local\nMODEL_DIR_NODE1=\"${HOME_BASE}/a--b\"\n"
    cfg = load({}, {"HOME_BASE": "/srv/models"}, text, tmp_path)
    assert cfg.node(1).model_dir == "/srv/models/a--b"
    with pytest.raises(InputError, match=r"model_drop.env:3: MODEL_DIR_NODE1 uses \$\{HOME_BASE\}, which is not set"):
        load({}, {}, text, tmp_path)
    cfg = load({}, {}, "MODEL_ID=a/b\nNODES=local\nHF_INCLUDE='${X}*.json'  # literal\n", tmp_path)
    assert cfg.include == ("${X}*.json",)


@pytest.mark.parametrize(("line", "message"), [
    ('MODEL_INSTANCE_ID="org--other"', r"model_drop.env:2 \(MODEL_INSTANCE_ID\): 'org--other' does not match "
                                       r"MODEL_ID 'org/name'; expected 'org--name'"),
    ('EXO_LIBP2P_PORT="70000"',
     r"model_drop.env:2 \(EXO_LIBP2P_PORT\): invalid port '70000'; expected an integer 1-65535"),
    ('EXO_API_PORT="0"  # api', r"model_drop.env:2 \(EXO_API_PORT\): invalid port '0'"),
    ('EXO_EXTRA_ARGS="--no-fast-synch --turbo"', r"model_drop.env:2 \(EXO_EXTRA_ARGS\): unknown exo flag '--turbo'"),
    ('EXO_EXTRA_ARGS="--api-port 1"',
     r"model_drop.env:2 \(EXO_EXTRA_ARGS\): EXO_EXTRA_ARGS sets --api-port, which modeldrop sets from EXO_API_PORT"),
    ('EXO_EXTRA_ARGS="--zenoh-port"', r"needs a value"),
    ('EXO_LOG_DIR_NODE1="logs"', r"model_drop.env:2 \(EXO_LOG_DIR_NODE1\): path 'logs' must be absolute"),
    ('MODEL_INSTANCE_IDS=x',
     r"model_drop.env:2: unknown key 'MODEL_INSTANCE_IDS' \(did you mean 'MODEL_INSTANCE_ID'\?\)"),
    ('EXO_LIBP2P_PRT=1', r"did you mean 'EXO_LIBP2P_PORT'"),
])
def test_bad_values_of_new_keys_name_file_and_line(tmp_path, line, message):
    """Every new key: a bad value is one line naming file:line and what would be valid."""
    with pytest.raises(InputError, match=message) as e:
        load({}, {}, f'MODEL_ID="org/name"\n{line}\nNODE1="local"\n', tmp_path)
    assert "\n" not in str(e.value)


def test_extra_args_are_kept_in_order(tmp_path):
    """EXO_EXTRA_ARGS keep their order; a fast-synch flag among them is the synch flag (EXO_SYNCH_FLAG) the run
    then requires, and one that contradicts EXO_SYNCH_FLAG is one line naming both."""
    cfg = load({}, {}, 'MODEL_ID=a/b\nNODES=local\nEXO_EXTRA_ARGS="--no-batch --zenoh-port 5000"\n', tmp_path)
    assert cfg.exo_extra_args == ("--no-batch", "--zenoh-port", "5000") and cfg.exo_synch_flag == "auto"
    cfg = load({}, {}, 'MODEL_ID=a/b\nNODES=local\nEXO_EXTRA_ARGS="--fast-synch --zenoh-port 5000"\n', tmp_path)
    assert cfg.exo_extra_args == ("--zenoh-port", "5000") and cfg.exo_synch_flag == "fast-synch"
    with pytest.raises(InputError, match=r"drop\.env:3 \(EXO_EXTRA_ARGS\): --fast-synch contradicts "
                                         r"EXO_SYNCH_FLAG=no-fast-synch \(.*drop\.env:4\)") as e:
        load({}, {}, 'MODEL_ID=a/b\nNODES=local\nEXO_EXTRA_ARGS="--fast-synch"\nEXO_SYNCH_FLAG=no-fast-synch\n',
             tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="invalid EXO_SYNCH_FLAG 'fast'; expected one of auto, no-fast-synch"):
        load({}, {}, 'MODEL_ID=a/b\nNODES=local\nEXO_SYNCH_FLAG=fast\n', tmp_path)
    with pytest.raises(InputError, match="invalid ratio '0.5'; expected a number of at least 1"):
        load({}, {}, 'MODEL_ID=a/b\nNODES=local\nCHAT_SPREAD_MAX=0.5\n', tmp_path)


def test_every_option_is_a_typed_field(tmp_path):
    """Each OPTIONS key has its own RunConfig attribute (no attribute served by name lookup)."""
    names = {f.name for f in dataclasses.fields(config.RunConfig)}
    missing = [o.key for o in config.OPTIONS if config.field_of(o.key) not in names]
    assert not missing, f"add a RunConfig field for {missing}"
    assert not hasattr(config.RunConfig, "__getattr__")
    cfg = load({"MODEL_ID": "a/b", "NODES": "local", "FAST": True}, {"PASS_MAX_AGE": "6h", "HF_REVISION": "v2"},
               None, tmp_path)
    assert cfg.fast is True and cfg.pass_max_age == 6 * 3600 and cfg.hf_revision == "v2"
    with pytest.raises(AttributeError):
        _ = cfg.no_such_setting


def test_model_from_the_command_line_carries_the_guide_files_instance_id_and_dirs(tmp_path):
    """`model-drop org/other` with the guide's file as defaults: MODEL_INSTANCE_ID and the ${MODEL_INSTANCE_ID}
    dirs follow the command line's model; an instance id that matches neither model is still an error."""
    environ = {"PROFILE_PATH": str(tmp_path / "none.json")}
    cfg = config.load_config({"MODEL_ID": "org/other"}, environ=environ, env_file=GUIDE_ENV)
    assert cfg.instance_id == "org--other" and cfg.node(1).model_dir == "/Users/user1/Models/org--other"
    env = tmp_path / "m.env"
    env.write_text(GUIDE_ENV.read_text().replace('MODEL_INSTANCE_ID="organization--model-name"',
                                                 'MODEL_INSTANCE_ID="someone--else"'))
    with pytest.raises(InputError, match=r"m.env:2 \(MODEL_INSTANCE_ID\): 'someone--else' does not match"):
        config.load_config({"MODEL_ID": "org/other"}, environ=environ, env_file=env)

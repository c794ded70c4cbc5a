"""What the profile records of a model dir (file count, shard pattern, required non-shard files) and how verify
holds the profile's counts: on the hub commit they were confirmed on only; a new commit is said, not failed."""

from __future__ import annotations

import json

from modeldrop import config
from modeldrop.audit import layout, shard_pattern
from modeldrop.probes import facts
from modeldrop.verify import count_expectations


def test_shard_pattern_keeps_what_the_names_share():
    names = [f"model-{i:05d}-of-00009.safetensors" for i in (1, 2, 9)]
    assert shard_pattern(names) == "model-*-of-00009.safetensors"
    assert shard_pattern(["model.safetensors"]) == "model.safetensors"
    assert shard_pattern([f"Qwen-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]) == "Qwen-Q4_K_M-*-of-00003.gguf"
    assert shard_pattern(["a.safetensors", "bb.safetensors"]) == "*.safetensors"
    assert shard_pattern([]) is None


def test_layout_counts_serving_files_and_names_the_required_ones():
    files = ["config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
             "tokenizer_config.json", "chat_template.jinja", "README.md", ".gitattributes", "sub/extra.txt",
             *(f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3))]
    got = layout({"files": [{"path": p, "size": 1} for p in files]})
    assert got == {"file_count": 12, "shard_pattern": "model-*-of-00003.safetensors",
                   "required_files": ["chat_template.jinja", "config.json", "generation_config.json",
                                      "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"]}


def _cfg(tmp_path, profile: dict, env: str = "") -> config.RunConfig:
    prof = tmp_path / "profiles.json"
    prof.write_text(json.dumps({"version": 1, "models": {"org/m": profile}}))
    env_file = tmp_path / "model_drop.env"
    env_file.write_text(f"MODEL_ID=org/m\nNODE1=local\n{env}")
    return config.load_config({}, environ={"PROFILE_PATH": str(prof)}, env_file=env_file)


def test_profile_counts_hold_on_their_commit_only(tmp_path):
    a, b = "a" * 40, "b" * 40
    cfg = _cfg(tmp_path, {"expected_safetensors": 9, "expected_gguf": 0, "hub_commit": a})
    assert count_expectations(cfg, a) == (9, 0, None)
    assert count_expectations(cfg, None) == (9, 0, None)  # commit unknown: held
    st, gguf, warning = count_expectations(cfg, b)
    assert (st, gguf) == (None, None)
    assert warning.startswith("new hub commit bbbbbbbbbbbb: the profile of org/m was confirmed on aaaaaaaaaaaa; its "
                              "counts (9 safetensors, 0 gguf) are not enforced on it") and "\n" not in warning
    # counts the operator set hold on any commit
    cfg = _cfg(tmp_path, {"expected_safetensors": 9, "expected_gguf": 0, "hub_commit": a},
               "EXPECTED_SAFE_TENSOR_COUNT=10\n")
    st, gguf, warning = count_expectations(cfg, b)
    assert (st, gguf) == (10, None) and "its counts (0 gguf) are not enforced" in warning
    # a row without a confirmed commit (set by hand, or by an older modeldrop): its counts hold
    assert count_expectations(_cfg(tmp_path, {"expected_safetensors": 9}), b) == (9, None, None)


def test_facts_probe_says_hardware_and_memory():
    model, memory = facts.hardware()
    assert memory is None or memory > 2**28
    assert model is None or isinstance(model, str)
    out = facts.main({})
    assert {"hw_model", "memory_bytes"} <= set(out)

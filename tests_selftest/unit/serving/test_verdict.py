"""The serving verdict (modeldrop.serving.judge): each item against EXO's own rules, from fabricated metadata and
node answers. Pure: no node, no hub."""

from __future__ import annotations

import pytest

from modeldrop import serving as sv
from modeldrop.config import load_config
from modeldrop.serving import GB, NodeServing, RepoMeta
from modeldrop.verdict import Fact

MODEL = "org/Model-8bit"
TYPES = ["llama", "qwen3", "deepseek_v3", "mistral3"]
REMAP = {"mistral": "llama", "kimi_k2": "deepseek_v3"}


def cfg(tmp_path, **env):
    base = {"MODEL_ID": MODEL, "NODES": "u@h1,u@h2", "RUN_REPORT_DIR": str(tmp_path / "r"),
            "PROFILE_PATH": str(tmp_path / "none.json")}
    return load_config({}, environ={**base, **{k: str(v) for k, v in env.items()}})


def node(k: int, avail_gb: float = 100, types=TYPES, version: str = "0.31.3", card=None, **kw) -> NodeServing:
    exo = {"model_types": types, "remapping": REMAP, "mlx_lm_version": version, "builtin_card": card}
    mem = {"available_bytes": int(avail_gb * GB), "total_bytes": 128 * GB, "rule": "psutil (MemAvailable)"}
    return NodeServing(k, kw.get("memory", mem), kw.get("exo", exo), {}, kw.get("error"))


def config(model_type: str = "llama", **extra) -> dict:
    return {"model_type": model_type, "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 40,
            "hidden_size": 4096, "quantization": {"group_size": 64, "bits": 8}, **extra}


def meta(size_gb: float = 60, shards: int = 4, config_obj=None, files=None, **kw) -> RepoMeta:
    """A repo of `shards` safetensors whose index declares size_gb (each shard 1 MB of header more)."""
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    total = int(size_gb * GB)
    listed = files if files is not None else {
        **{n: total // shards + 1_000_000 for n in names}, "config.json": 900, "model.safetensors.index.json": 20_000,
        "tokenizer.json": 9_000_000, "tokenizer_config.json": 5_000}
    return RepoMeta("the hub (test)", dict(listed), dict(listed), config() if config_obj is None else config_obj,
                    kw.get("config_error"), kw.get("index", {"total_size": total, "shards": names}),
                    kw.get("index_error"))


def two(**kw) -> dict[int, NodeServing]:
    return {1: node(1, **kw), 2: node(2, **kw)}


def items(v) -> dict:
    return v.details["items"]


def test_a_model_that_serves_is_go_with_every_item_said(tmp_path):
    v = sv.judge(meta(), two(), cfg(tmp_path))
    assert v.ok and v.details["outcome"] == "GO" and not v.warnings, v.warnings
    it = items(v)
    assert it["format"]["line"] == "MLX safetensors, 4 file(s) mlx-lm loads"
    assert it["quantization"]["line"] == "8-bit, group size 64, affine (MLX)"
    assert "mlx_lm.models.llama on node1 (mlx-lm 0.31.3), node2 (mlx-lm 0.31.3)" in it["architecture"]["line"]
    mem = it["memory"]
    assert mem["size_bytes"] == 60 * GB and mem["available_bytes"] == 200 * GB and mem["margin_bytes"] == 140 * GB
    assert mem["layers"] == {"node1": 20, "node2": 20}
    assert mem["per_node"]["node1"] == {"share_bytes": 30 * GB, "margin_bytes": 70 * GB}
    assert it["card"]["line"].startswith("no built-in card; the canary adds one with POST /models/add (n_layers 40")
    assert [line.split(":")[0] for line in sv.lines(v)] == list(sv.ORDER)


def test_an_architecture_no_node_knows_stops_with_the_way_out(tmp_path):
    v = sv.judge(meta(config_obj=config("qwen9_moe")), two(), cfg(tmp_path))
    assert not v.ok and v.details["outcome"] == "NO-GO"
    (p,) = v.problems
    assert "no mlx_lm.models.qwen9_moe in the exo of node1 (mlx-lm 0.31.3), node2 (mlx-lm 0.31.3)" in p
    assert "update exo on every node" in p
    assert v.facts == {Fact.unknown_architecture: {"node1": "qwen9_moe", "node2": "qwen9_moe"}}


def test_drift_names_the_node_whose_exo_is_behind(tmp_path):
    nodes = {1: node(1, types=[*TYPES, "qwen3_5_moe"], version="0.31.3"), 2: node(2, version="0.28.0")}
    v = sv.judge(meta(config_obj=config("qwen3_5_moe")), nodes, cfg(tmp_path))
    (p,) = v.problems
    assert "in the exo of node2 (mlx-lm 0.28.0)" in p and "update exo on node2 to the exo node1 runs" in p
    assert "mlx-lm drift across nodes: node1 0.31.3, node2 0.28.0" in v.warnings
    assert v.facts[Fact.unknown_architecture] == {"node2": "qwen3_5_moe"}


def test_mlx_lms_remapping_is_followed(tmp_path):
    v = sv.judge(meta(config_obj=config("mistral")), two(), cfg(tmp_path))
    assert v.ok and "mlx_lm.models.llama" in items(v)["architecture"]["line"]


def test_a_config_naming_its_own_module_needs_no_mlx_lm_module(tmp_path):
    v = sv.judge(meta(config_obj=config("brand_new", model_file="modeling.py")), two(), cfg(tmp_path))
    assert v.ok and "names its own module 'modeling.py'" in items(v)["architecture"]["line"]


def test_gguf_only_is_an_unloadable_format_and_the_missing_config_only_unknown(tmp_path):
    files = {"README.md": 100, "Model-Q4_K_M.gguf": 40 * GB}
    v2 = sv.judge(RepoMeta("the hub (test)", files, files), two(), cfg(tmp_path, MODEL_ID="org/Model-GGUF"))
    assert [p.split(":")[0] for p in v2.problems] == ["will not serve (format)"], v2.problems
    (p,) = v2.problems
    assert "gguf only (1 gguf)" in p and "pick its MLX variant (e.g. mlx-community/Model-4bit" in p
    assert v2.facts == {Fact.unloadable_format: "gguf"}
    it = items(v2)
    assert it["architecture"]["status"] == it["card"]["status"] == "unknown"
    assert it["architecture"]["line"] == "config.json: the repo has none (the hub (test))"
    assert "serving verdict: architecture unknown: config.json: the repo has none (the hub (test))" in v2.warnings


def test_pytorch_only_says_how_to_convert(tmp_path):
    files = {"config.json": 900, "pytorch_model-00001-of-00002.bin": 5 * GB, "pytorch_model-00002-of-00002.bin": GB}
    v = sv.judge(meta(files=files, index=None), two(), cfg(tmp_path))
    p = v.problems[0]  # then the card: no safetensors index for POST /models/add to size it from
    assert "pytorch only (2 pytorch)" in p and f"mlx_lm.convert --hf-path {MODEL} -q" in p


def test_mixed_formats_name_the_include_that_keeps_one_and_the_include_is_honoured(tmp_path):
    m = meta()
    m.files["model.gguf"] = m.all_files["model.gguf"] = 30 * GB
    v = sv.judge(m, two(), cfg(tmp_path))
    (p,) = v.problems
    assert "mixed weight formats (1 gguf, 4 safetensors)" in p
    assert "HF_INCLUDE=*.safetensors,*.json" in p
    m.files = {k: s for k, s in m.files.items() if not k.endswith(".gguf")}  # what that HF_INCLUDE downloads
    assert sv.judge(m, two(), cfg(tmp_path)).ok


def test_safetensors_mlx_lm_does_not_read_are_unloadable(tmp_path):
    files = {"config.json": 900, "consolidated.safetensors": 10 * GB}
    v = sv.judge(meta(files=files, index=None), two(), cfg(tmp_path))
    assert "none named model*.safetensors at the top of the repo (consolidated.safetensors)" in v.problems[0]


def test_a_model_bigger_than_the_cluster_does_not_fit_and_says_by_how_much(tmp_path):
    v = sv.judge(meta(size_gb=713, shards=2), two(avail_gb=23), cfg(tmp_path))
    (p,) = v.problems
    assert "does not fit: 713.0 GB (the index's metadata.total_size) on min_nodes=2: 46.0 GB available, 667.0 GB " \
           "short (EXO: \"No cycles found with sufficient memory\")" in p
    # no way out that would fit is offered: a third node (69 GB), the 4-bit variant (356.5 GB), 256 GB installed
    assert p.endswith("pick a smaller model (no variant of this one fits these nodes)"), p
    assert "add a node" not in p and "4-bit" not in p and "free memory" not in p
    assert v.facts[Fact.does_not_fit] == {"size_bytes": 713 * GB, "available_bytes": 46 * GB}


def test_the_ways_out_offered_are_the_ones_that_would_fit(tmp_path):
    (p,) = sv.judge(meta(size_gb=60, shards=2), two(avail_gb=23), cfg(tmp_path)).problems
    assert "46.0 GB available, 14.0 GB short" in p  # a third node like these holds 69 GB; 4-bit is 30 GB
    assert "add a node like these (min_nodes=3); or free memory on the nodes (256.0 GB installed" in p, p
    assert p.endswith("or pick the 4-bit variant (about 30.0 GB)"), p
    (p,) = sv.judge(meta(size_gb=80, shards=2), two(avail_gb=23), cfg(tmp_path)).problems
    assert "add a node" not in p and "pick the 4-bit variant (about 40.0 GB)" in p, p


def test_installed_memory_that_would_fit_says_free_memory(tmp_path):
    v = sv.judge(meta(size_gb=120), two(avail_gb=50), cfg(tmp_path))
    assert "free memory on the nodes (256.0 GB installed" in v.problems[0]


def test_a_pipeline_node_too_small_for_its_layers_is_exos_insufficient_memory(tmp_path):
    """EXO allocates layers in proportion to available memory, at least one per node: with 2 layers, node1 gets
    one (half the model) even with 10 GB of 100 available, and placement refuses."""
    m = meta(size_gb=90, config_obj=config(num_hidden_layers=2))
    v = sv.judge(m, {1: node(1, avail_gb=10), 2: node(2, avail_gb=90)}, cfg(tmp_path))
    assert "node1 would hold 45.0 GB of layers with 10.0 GB available" in v.problems[0]
    assert items(v)["memory"]["layers"] == {"node1": 1, "node2": 1}
    tensor = sv.judge(m, {1: node(1, avail_gb=10), 2: node(2, avail_gb=90)}, cfg(tmp_path, EXO_SHARDING="Tensor"))
    assert tensor.ok and any("its Tensor share 45.0 GB exceeds its 10.0 GB available" in w for w in tensor.warnings)


def test_a_fit_under_the_headroom_is_a_warning_not_a_stop(tmp_path):
    v = sv.judge(meta(size_gb=190), two(), cfg(tmp_path))
    assert v.ok and v.details["outcome"] == "GO (tight)"
    assert "node1 keeps 5.0 GB beyond its share, under MEMORY_HEADROOM_GB=8" in items(v)["memory"]["line"]
    assert sv.judge(meta(size_gb=190), two(), cfg(tmp_path, MEMORY_HEADROOM_GB=4)).details["outcome"] == "GO"


@pytest.mark.parametrize("index, needle", [
    ({"total_size": 60 * GB, "shards": [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)]}, None),
    ({"total_size": 6 * GB, "shards": [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)]},
     "model.safetensors.index.json: metadata.total_size 6.0 GB disagrees with its 4 shard(s) in the hub (test) "
     "(60.0 GB)"),
    ({"total_size": 60 * GB, "shards": ["model-00001-of-00004.safetensors", "model-00009.safetensors"]},
     "model.safetensors.index.json names 1 shard(s) the repo does not have (model-00009.safetensors): its "
     "metadata.total_size cannot be checked"),
])
def test_an_index_that_lies_makes_memory_unknown_with_one_line_never_a_stop(tmp_path, index, needle):
    v = sv.judge(meta(size_gb=60, index=index), two(avail_gb=1), cfg(tmp_path))
    if needle is None:
        assert not v.ok  # the honest index: 60 GB on 2 GB does not fit
        return
    assert v.ok, v.problems
    assert items(v)["memory"]["status"] == "unknown" and needle in v.warnings
    assert ("serving verdict: memory unknown: the model's size is unknown (the index disagrees with the file "
            "list)") in v.warnings


def test_a_config_that_is_not_json_is_named_and_unknown(tmp_path):
    m = meta()
    m.config, m.config_error = None, "not JSON (JSONDecodeError: Expecting value: line 1 column 1)"
    v = sv.judge(m, two(), cfg(tmp_path))
    assert v.ok and items(v)["architecture"]["status"] == "unknown"
    assert ("serving verdict: architecture unknown: config.json from the hub (test): not JSON (JSONDecodeError: "
            "Expecting value: line 1 column 1)") in v.warnings
    assert items(v)["memory"]["status"] == "go"  # the index still sizes it


def test_a_node_that_cannot_be_asked_is_a_warning_and_the_others_decide(tmp_path):
    nodes = {1: node(1), 2: node(2, exo={"error": "/x/python did not answer within 30s"})}
    v = sv.judge(meta(), nodes, cfg(tmp_path))
    assert v.ok and "node2: exo's interpreter could not be asked (/x/python did not answer within 30s): " \
                     "architecture unknown there" in v.warnings
    only = sv.judge(meta(config_obj=config("qwen9_moe")), nodes, cfg(tmp_path))
    assert only.facts[Fact.unknown_architecture] == {"node1": "qwen9_moe"}
    down = {1: node(1), 2: NodeServing(2, error="NodeError: ssh: connection refused")}
    v = sv.judge(meta(), down, cfg(tmp_path))
    assert v.ok and items(v)["memory"]["status"] == "unknown"
    assert "node2: its available memory could not be read (NodeError: ssh: connection refused): memory fit " \
           "unknown" in v.warnings


def test_a_built_in_card_decides_the_size_exo_places_with(tmp_path):
    card = {"path": "/exo/resources/inference_model_cards/org--Model-8bit.toml", "storage_size": 150 * GB,
            "n_layers": 40}
    v = sv.judge(meta(size_gb=60), two(card=card), cfg(tmp_path))
    it = items(v)
    assert it["card"]["status"] == "go" and it["card"]["line"].startswith("built-in card on node1, node2")
    assert it["memory"]["size_bytes"] == 150 * GB and "EXO's built-in card on node1" in it["memory"]["line"]


@pytest.mark.parametrize("change, why", [
    (lambda m: m.config.pop("hidden_size"), "config.json has no hidden_size"),
    (lambda m: m.config.pop("num_hidden_layers"), "config.json has no layer count"),
    (lambda m: m.all_files.pop("model.safetensors.index.json"), "the repo has no model.safetensors.index.json"),
])
def test_a_card_exo_cannot_build_is_a_no_go(tmp_path, change, why):
    m = meta()
    change(m)
    v = sv.judge(m, two(), cfg(tmp_path))
    assert [p for p in v.problems if "(card)" in p and why in p], v.problems
    assert Fact.card_impossible in v.facts


def test_text_config_carries_the_layers_as_in_exos_config_data(tmp_path):
    c = config(text_config={"num_hidden_layers": 48, "hidden_size": 2048})
    del c["num_hidden_layers"], c["hidden_size"]
    v = sv.judge(meta(config_obj=c), two(), cfg(tmp_path))
    assert v.ok and "(n_layers 48, hidden_size 2048)" in items(v)["card"]["line"]


def test_the_override_turns_each_no_go_into_a_recorded_warning(tmp_path):
    v = sv.judge(meta(size_gb=713, config_obj=config("qwen9_moe")), two(avail_gb=23),
                 cfg(tmp_path, ALLOW_SERVING_NO_GO=1))
    assert v.ok and not v.facts and v.details["overridden"] and v.details["outcome"] == "NO-GO (overridden)"
    overridden = [w for w in v.warnings if w.endswith("(overridden by --allow-serving-no-go)")]
    assert [w.split(":")[0] for w in overridden] == ["will not serve (architecture)", "will not serve (memory)"]
    assert sv.block(v)["overridden"] is True


def test_the_profile_keeps_what_the_verdict_saw(tmp_path):
    v = sv.judge(meta(), two(), cfg(tmp_path))
    assert sv.profile_fields(sv.block(v)) == {"serving": {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "format": "MLX safetensors",
        "quantization": "8-bit, group size 64, affine (MLX)", "size_bytes": 60 * GB}}
    assert sv.profile_fields(None) == {}

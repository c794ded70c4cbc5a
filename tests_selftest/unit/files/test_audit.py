"""audit.completeness / parity verdicts on manifests made by the real `manifest` probe over temp dirs."""

from __future__ import annotations

import os
import shutil
import unicodedata
from pathlib import Path

import pytest

from modeldrop.audit import completeness, manifest_digest, parity
from modeldrop.hub import ExpectedFile, ExpectedManifest, expected_from_cache
from modeldrop.nodes import LocalNode
from tests_selftest.support.modelfiles import COMMIT, make_model, write_safetensors

PY = "/usr/bin/python3"


@pytest.fixture(scope="module")
def node() -> LocalNode:
    return LocalNode("node1", python_cmd=PY)


def manifest(node: LocalNode, path: Path, **kw) -> dict:
    return node.run_probe("manifest", {"path": str(path), "model_folder": path.name, **kw})


def expected_of(tree: dict, commit: str = COMMIT) -> ExpectedManifest:
    return ExpectedManifest(commit, {p: ExpectedFile(e["size"], e["sha256"], e["blob_id"]) for p, e in tree.items()},
                            "hub")


def test_complete_model_passes(node, tmp_path):
    d = tmp_path / "org--name"
    tree = make_model(d)
    m = manifest(node, d)
    v = completeness(m, expected_of(tree), expected_safetensors=3)
    assert v.ok, v.problems
    assert v.details["n_safetensors"] == 3 and v.details["expected_files"] == len(tree)
    offline = expected_from_cache(m)
    assert offline is not None and offline.source == "cache" and set(offline.files) == set(tree)
    assert completeness(m, offline).ok


def test_truncated_shard(node, tmp_path):
    d = tmp_path / "org--name"
    tree = make_model(d, shard_bytes=8192)
    shard = d / "model-00002-of-00003.safetensors"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 4096)
    v = completeness(manifest(node, d), expected_of(tree))
    assert not v.ok
    trunc = [p for p in v.problems if "truncated" in p]
    assert trunc and trunc[0].startswith("1 shard truncated: model-00002-of-00003.safetensors declares 8192 data "
                                         "bytes but the file holds 4096"), v.problems
    assert any("differs in size" in p for p in v.problems)


def test_index_names_missing_shard(node, tmp_path):
    d = tmp_path / "org--name"
    make_model(d, hf_cache=False)
    (d / "model-00003-of-00003.safetensors").unlink()
    v = completeness(manifest(node, d), None)
    assert any("names 1 shard that is missing: model-00003-of-00003.safetensors" in p for p in v.problems), v.problems


def test_part_marker_in_subfolder(node, tmp_path):
    d = tmp_path / "org--name"
    make_model(d, hf_cache=False)
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "sub" / "deeper" / "x.bin.part").write_bytes(b"12345")
    m = manifest(node, d)
    assert [x["path"] for x in m["markers"]] == ["sub/deeper/x.bin.part"]
    v = completeness(m, None)
    assert any(p.startswith("1 partial-download marker in the model dir: sub/deeper/x.bin.part (5 B)")
               for p in v.problems), v.problems


def test_stale_incomplete_in_cache_fails_with_hint(node, tmp_path):
    d = tmp_path / "org--name"
    tree = make_model(d)
    orphan = d / ".cache/huggingface/download/D5-QTaCbl9VU=.abc.e71801f8.incomplete"
    orphan.write_bytes(b"")
    m = manifest(node, d)
    v = completeness(m, expected_of(tree))
    assert not v.ok and len(v.problems) == 1, v.problems
    assert "stale orphan" in v.problems[0] and str(orphan) in v.problems[0]
    assert m["files"] and all(not f["path"].startswith(".cache") for f in m["files"])


def test_extra_file_warns_missing_file_fails(node, tmp_path):
    d = tmp_path / "org--name"
    tree = make_model(d)
    (d / "notes.txt").write_text("hello")
    (d / "tokenizer.json").unlink()
    v = completeness(manifest(node, d), expected_of(tree))
    assert any(w.startswith("1 file not in the hub at c0ffee000000: notes.txt (5 B)") for w in v.warnings), v.warnings
    assert any(p.startswith("1 expected file missing (the hub at c0ffee000000): tokenizer.json") for p in v.problems)


def test_counts_strict_and_lenient(node, tmp_path):
    d = tmp_path / "org--name"
    make_model(d, hf_cache=False)
    m = manifest(node, d)
    strict = completeness(m, None, expected_safetensors=4)
    lenient = completeness(m, None, expected_safetensors=4, strict=False)
    assert "expected 4 safetensors files, found 3" in strict.problems
    assert lenient.ok and "expected 4 safetensors files, found 3" in lenient.warnings


def test_mixed_formats_and_bad_gguf(node, tmp_path):
    d = tmp_path / "org--name"
    make_model(d, hf_cache=False)
    (d / "model-q4.gguf").write_bytes(b"NOPE" + b"\0" * 60)
    v = completeness(manifest(node, d), None)
    assert any(p.startswith("mixed weight formats: 1 gguf, 3 safetensors") for p in v.problems), v.problems
    assert any("without the GGUF magic: model-q4.gguf" in p for p in v.problems)


def test_mixed_commits_and_stale_commit(node, tmp_path):
    d = tmp_path / "org--name"
    tree = make_model(d)
    meta = d / ".cache/huggingface/download/config.json.metadata"
    meta.write_text("f" * 40 + "\netag\n1.0\n")
    v = completeness(manifest(node, d), expected_of(tree))
    assert any(p.startswith("mixed commits in .cache/huggingface/download/*.metadata") for p in v.problems)
    d2 = tmp_path / "b" / "org--name"
    tree2 = make_model(d2)
    v2 = completeness(manifest(node, d2), expected_of(tree2, commit="a" * 40))
    assert any("downloaded at commit c0ffee000000 but the hub's revision is at aaaaaaaaaaaa" in p for p in v2.problems)


def test_empty_dir_points_at_alternate(node, tmp_path, monkeypatch):
    home = tmp_path / "home"
    make_model(home / "Models" / "org--name", hf_cache=False)
    d = tmp_path / "models" / "org--name"
    d.mkdir(parents=True)
    env_home = {"HOME": str(home)}
    n = LocalNode("node2", python_cmd=PY)
    res = n.run([PY, "-c", "import os;print(os.path.expanduser('~'))"], timeout=10, env=env_home)
    assert res.stdout.strip() == str(home)
    monkeypatch.setenv("HOME", str(home))
    m = manifest(n, d, search_alternates=True)
    v = completeness(m, None, label="MODEL_DIR_NODE2")
    assert v.problems[0].startswith(f"MODEL_DIR_NODE2 {d} is empty but the model is at {home}/Models/org--name (6 files,")


def test_case_only_names_flagged(node, tmp_path):
    d = tmp_path / "org--name"
    make_model(d, hf_cache=False)
    (d / "README.md").write_text("a")
    (d / "readme.md").write_text("b")
    m = manifest(node, d)
    assert m["case_collisions"] == [["README.md", "readme.md"]]
    assert any("differ only in case" in p for p in completeness(m, None).problems)


def test_litter_ignored_everywhere(node, tmp_path):
    a, b = tmp_path / "a" / "org--name", tmp_path / "b" / "org--name"
    make_model(a, hf_cache=False)
    shutil.copytree(a, b)
    for junk in (".DS_Store", "._model-00001-of-00003.safetensors", "Icon\r", ".fseventsd/x", "sub/.DS_Store"):
        (b / junk).parent.mkdir(parents=True, exist_ok=True)
        (b / junk).write_bytes(b"junk")
    mb = manifest(node, b)
    assert len(mb["litter"]) == 5 and completeness(mb, None).ok
    ma = manifest(node, a)
    assert parity({"node1": ma, "node2": mb}).ok
    assert manifest_digest(ma) == manifest_digest(mb)


def test_nfd_and_nfc_names_are_equal(node, tmp_path):
    a, b = tmp_path / "a" / "org--name", tmp_path / "b" / "org--name"
    make_model(a, hf_cache=False)
    shutil.copytree(a, b)
    name = "café.txt"
    (a / unicodedata.normalize("NFC", name)).write_text("x")
    (b / unicodedata.normalize("NFD", name)).write_text("x")
    assert os.listdir(a) != os.listdir(b) or True
    ma, mb = manifest(node, a), manifest(node, b)
    assert mb["non_nfc"] == [unicodedata.normalize("NFC", name)]
    assert parity({"node1": ma, "node2": mb}).ok


def test_parity_lists_differences(node, tmp_path):
    a, b = tmp_path / "a" / "org--name", tmp_path / "b" / "org--name"
    make_model(a, hf_cache=False, shard_bytes=1048576)
    shutil.copytree(a, b)
    (a / "notes.txt").write_text("twelve bytes")
    write_safetensors(b / "model-00002-of-00003.safetensors", 524288 - 8 - 120)
    ma, mb = manifest(node, a), manifest(node, b)
    size_a = (a / "model-00002-of-00003.safetensors").stat().st_size
    size_b = (b / "model-00002-of-00003.safetensors").stat().st_size
    v = parity({"node1": ma, "node2": mb})
    assert not v.ok
    assert "only on node1: notes.txt (12 B)" in v.problems
    assert (f"size differs: model-00002-of-00003.safetensors: node1 {size_a} B, node2 {size_b} B") in v.problems
    lenient = parity({"node1": ma, "node2": mb}, strict=False)
    assert "only on node1: notes.txt (12 B)" in lenient.warnings and not lenient.ok
    assert manifest_digest(ma) != manifest_digest(mb)


def test_orphaned_cache_metadata_is_noise_not_a_failure(node, tmp_path):
    """A `.metadata` left by an earlier revision for a file no longer in the repo: listed, never failed on."""
    d = tmp_path / "org--name"
    tree = make_model(d)
    (d / ".cache/huggingface/download/old-shard.safetensors.metadata").write_text("f" * 40 + "\noldetag\n1.0\n")
    m = manifest(node, d)
    assert m["tree"] is not None and m["tree"]["commit"] == COMMIT  # the orphan does not sway the cached tree
    v = completeness(m, expected_of(tree))
    assert v.ok, v.problems
    assert v.details["metadata_noise"] == [".cache/huggingface/download/old-shard.safetensors.metadata"]
    assert v.details["commits"] == {COMMIT: len(tree)}
    other = tmp_path / "b" / "org--name"
    shutil.copytree(d, other)
    (other / ".cache/huggingface/download/old-shard.safetensors.metadata").write_text("e" * 40 + "\nothertag\n1.0\n")
    pv = parity({"node1": m, "node2": manifest(node, other)})
    assert pv.ok, pv.problems

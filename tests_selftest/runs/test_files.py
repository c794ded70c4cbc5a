"""Whole runs of gates 0–3 against the sandbox, with faults injected into real files, binaries and hub.

Each fault must be caught at the named gate, with a message naming the evidence, and no later
gate may run. The sandbox's nodes are real sshd nodes; the hub serves the real `hf` CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests_selftest.support.file_runs import (
    FILE_GATES_ONLY,
    assert_caught,
    env_values,
    node_dir,
    run,
    write_as,
)

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(900)]


@pytest.mark.fault("hf-missing-node2", gate="preflight", signature="not found")
def test_hf_missing_on_node2_fails_preflight(clean):
    sbx, reports = clean
    hf = node_dir(sbx, 2, "HF_CMD_NODE")
    hidden = hf.with_name(hf.name + ".hidden")
    hf.rename(hidden)
    try:
        result = run(sbx, reports)
    finally:
        hidden.rename(hf)
    assert_caught(result, "preflight", "node2", str(hf), "not found")
    assert result.outcome("node1_download") == "skipped"
    assert "blocked by preflight (failed)" in result.message("node1_download")


@pytest.mark.fault("disk-below-margin", gate="preflight", signature="below the threshold")
def test_disk_below_threshold_fails_preflight(clean):
    sbx, reports = clean
    profile = Path(env_values(sbx)["PROFILE_PATH"])
    saved = profile.read_text() if profile.exists() else None
    profile.write_text(json.dumps({"version": 1, "models": {env_values(sbx)["MODEL_ID"]: {
        "status": "active", "disk_threshold_gb": 10_000_000}}}))
    try:
        result = run(sbx, reports)
    finally:
        profile.write_text(saved) if saved is not None else profile.unlink()
    assert_caught(result, "preflight", "disk free", "below the threshold")


@pytest.mark.fault("stale-incomplete", gate="node1_verify", signature=".incomplete")
def test_stale_incomplete_beside_complete_download_fails_node1_verify(clean):
    sbx, reports = clean
    sbx.populate_model(1)
    stale = node_dir(sbx, 1) / ".cache/huggingface/download/D5-QTaCbl9VUFv9Wr0C28eFewRc=.abc123.e71801f8.incomplete"
    write_as(sbx, 1, stale, b"x" * 100)
    result = run(sbx, reports)
    assert result.outcome("node1_download") == "passed", result.outcomes
    assert_caught(result, "node1_verify", ".incomplete")


@pytest.mark.fault("shard-truncated", gate="node1_verify", signature="truncated")
def test_shard_truncated_under_its_own_name_fails_node1_verify(clean):
    sbx, reports = clean
    sbx.populate_model(1)
    shard = sorted(node_dir(sbx, 1).glob("*.safetensors"))[1]
    write_as(sbx, 1, shard, shard.read_bytes()[: shard.stat().st_size // 2], keep_mtime_of=shard)
    result = run(sbx, reports)
    assert_caught(result, "node1_verify", "truncated", shard.name)


@pytest.mark.fault("index-names-missing-shard", gate="node1_verify", signature="model-00009-of-00009.safetensors")
def test_index_naming_a_missing_shard_fails_node1_verify(clean):
    sbx, reports = clean
    sbx.populate_model(1)
    index = node_dir(sbx, 1) / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = "model-00009-of-00009.safetensors"
    write_as(sbx, 1, index, json.dumps(data).encode(), keep_mtime_of=index)
    result = run(sbx, reports)
    assert_caught(result, "node1_verify", "model-00009-of-00009.safetensors")


@pytest.mark.fault("part-file-in-subfolder-node2", gate="node2_verify", signature="sub/extra.bin.part")
def test_part_file_in_a_subfolder_on_node2_fails_node2_verify(clean):
    sbx, reports = clean
    sbx.populate_model(2)
    write_as(sbx, 2, node_dir(sbx, 2) / "sub" / "extra.bin.part", b"partial")
    result = run(sbx, reports)
    assert result.outcome("node1_verify") == "passed", result.outcomes
    assert_caught(result, "node2_verify", "sub/extra.bin.part")


@pytest.mark.fault("model-in-another-dir-node2", gate="preflight", signature="model dir mismatch (fast stop)")
def test_node2_model_in_another_dir_is_the_dir_mismatch_fast_stop(clean):
    """The guide's fast stop: node 2's model complete in ~/Models, its MODEL_DIR_NODE2 empty -> preflight stops,
    naming both paths and the two ways out, before any download or verify."""
    sbx, reports = clean
    sbx.populate_model(1)
    elsewhere = sbx.node_home(2) / "Models" / node_dir(sbx, 2).name
    sbx.populate_model(2, dir=elsewhere)
    result = run(sbx, reports)
    assert_caught(result, "preflight", "node2: model dir mismatch (fast stop)")
    handoff = (result.run_folder() / "ledger.jsonl").read_text()
    assert f"set MODEL_DIR_NODE2={elsewhere}" in handoff and f"mv {elsewhere} " in handoff
    assert "node1: model dir mismatch" not in handoff


@pytest.mark.parametrize("node_with_extra", [
    pytest.param(k, marks=pytest.mark.fault(f"extra-file-node{k}", gate="parity", signature="notes.txt"))
    for k in (1, 2)])
def test_one_extra_or_missing_file_fails_parity(clean, node_with_extra):
    sbx, reports = clean
    for k in (1, 2):
        sbx.populate_model(k)
    write_as(sbx, node_with_extra, node_dir(sbx, node_with_extra) / "notes.txt", b"local notes\n")
    result = run(sbx, reports)
    assert result.outcome("node2_verify") == "passed", result.outcomes
    assert_caught(result, "parity", "notes.txt", f"node{node_with_extra}")


def test_files_differing_only_under_cache_pass_parity(clean):
    sbx, reports = clean
    for k in (1, 2):
        sbx.populate_model(k)
    write_as(sbx, 2, node_dir(sbx, 2) / ".cache/huggingface/download/leftover.lock", b"")
    write_as(sbx, 2, node_dir(sbx, 2) / ".DS_Store", b"\0\0\0\1Bud1")
    result = run(sbx, reports, *FILE_GATES_ONLY)
    assert result.outcome("parity") == "passed", (result.outcomes, result.output[-3000:])


@pytest.mark.fault("hub-429", gate="node1_download", signature="429")
def test_hub_429_is_retried_then_fails_node1_download_with_every_attempts_reason(clean):
    """The hub answers 429 every time: node 1's download is run DOWNLOAD_ATTEMPTS times (a progress line and a
    ledger record each), then the gate fails naming every attempt's cause."""
    sbx, reports = clean
    model_dir = node_dir(sbx, 1)
    assert not model_dir.exists() or not any(model_dir.iterdir()), "hf serves a non-empty dir despite a 429"
    sbx.hub.set_faults({"rate_limit_429": True})
    result = run(sbx, reports, "--download-attempts", "2", "-v")  # -v cancels the runs' -q: progress lines shown
    assert_caught(result, "node1_download", "failed after 2 attempts: attempts 1, 2 (rc 1): ", "429")
    assert "node1 download: attempt 1 of 2 failed (rc 1) after " in result.output
    assert "next attempt in 1s (hf resumes what it has)" in result.output and "node1 download: attempt 2 of 2" in \
        result.output
    records = [json.loads(x) for x in (result.run_folder() / "ledger.jsonl").read_text().splitlines() if x.strip()]
    tries = [x for x in records if x["event"] == "download_attempt"]
    assert [(x["node"], x["attempt"], x["of"], x["retry_in_s"]) for x in tries] == [("node1", 1, 2, 1.0),
                                                                                    ("node1", 2, 2, None)], tries
    assert all("429" in x["cause"] for x in tries)


def test_green_file_gates_leave_manifests_in_the_run_folder(clean):
    sbx, reports = clean
    result = run(sbx, reports, *FILE_GATES_ONLY)
    for gate in ("preflight", "node1_download", "node1_verify", "node2_download", "node2_verify", "parity"):
        assert result.outcome(gate) == "passed", (gate, result.outcomes, result.output[-3000:])
    folder = result.run_folder()
    for k in (1, 2):
        manifest = json.loads((folder / "manifests" / f"node{k}.json").read_text())
        assert any(f["path"] == "model.safetensors.index.json" for f in manifest["files"])
    assert (folder / "ledger.html").exists()
    shutil.rmtree(reports, ignore_errors=True)


@pytest.mark.fault("corrupt-shard-same-size", gate="node1_verify", signature="sha256")
def test_verify_hashes_catches_a_corrupt_shard_that_kept_its_size(clean):
    sbx, reports = clean
    sbx.populate_model(1)
    shard = sorted(node_dir(sbx, 1).glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, same header: only a hash can tell
    write_as(sbx, 1, shard, bytes(data), keep_mtime_of=shard)
    plain = run(sbx, reports, *FILE_GATES_ONLY)
    assert plain.outcome("node1_verify") == "passed", plain.outcomes
    hashed = run(sbx, reports, "--verify-hashes")
    assert_caught(hashed, "node1_verify", "sha256", shard.name)

"""Whole runs against the sandbox for models that cannot serve: each of the hub's no-go repos is stopped at
preflight by the serving verdict, with its own signature, the fact, the node and the way out, in seconds, with
nothing downloaded (the override, `--allow-serving-no-go`, is judged in tests_selftest/unit/serving).

The runs stop at preflight, so each costs one preflight; they share the self-tests' sandbox (`clean`).
"""

from __future__ import annotations

import json

import pytest

from modeldrop.ledger.jsonl import read_jsonl
from sandbox import serving_repos as sr
from tests_selftest.support.file_runs import assert_caught, node_dir, run

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(600)]


def model_env(sbx, repo_id: str) -> dict[str, str]:
    """MODEL_DIR_NODEk for `repo_id`: the sandbox's models dir, the repo's org--name folder."""
    folder = repo_id.replace("/", "--")
    return {f"MODEL_DIR_NODE{k}": str(node_dir(sbx, k).parent / folder) for k in (1, 2)}


CASES = [
    pytest.param(sr.UNKNOWN_ARCH, "architecture", "X-UNKNOWN-ARCH",
                 [f"no mlx_lm.models.{sr.ARCH_TYPE} in the exo of node1 (mlx-lm ", "node2 (mlx-lm ",
                  "update exo on every node"],
                 marks=pytest.mark.fault("unknown-architecture", gate="preflight", signature="X-UNKNOWN-ARCH"),
                 id="unknown-architecture"),
    pytest.param(sr.GGUF_ONLY, "format", "X-UNLOADABLE-FORMAT",
                 ["gguf only (1 gguf)", "pick its MLX variant (e.g. mlx-community/tiny-gguf-only-sbx-4bit"],
                 marks=pytest.mark.fault("gguf-only", gate="preflight", signature="X-UNLOADABLE-FORMAT"),
                 id="gguf-only"),
    pytest.param(sr.DOES_NOT_FIT, "memory", "X-DOES-NOT-FIT",
                 ["does not fit: 713.0 GB (the index's metadata.total_size) on min_nodes=2",
                  "No cycles found with sufficient memory", "pick a smaller model"],
                 marks=pytest.mark.fault("does-not-fit", gate="preflight", signature="X-DOES-NOT-FIT"),
                 id="does-not-fit"),
]


@pytest.mark.parametrize("repo_id, item, signature, needles", CASES)
def test_a_model_that_cannot_serve_stops_at_preflight_with_nothing_downloaded(clean, repo_id, item, signature,
                                                                              needles):
    sbx, reports = clean
    seen = len(sbx.hub.requests())
    result = run(sbx, reports, "--model", repo_id, extra_env=model_env(sbx, repo_id))
    assert_caught(result, "preflight", f"will not serve ({item})", *needles)
    folder = result.run_folder()
    records = read_jsonl(folder / "ledger.jsonl")
    sigs = [s["id"] for r in records if r["event"] == "signature" and r.get("gate") == "preflight"
            for s in r["signatures"]]
    assert sigs == [signature], sigs
    verdict = json.loads((folder / "run.json").read_text())["serving_verdict"]
    assert verdict["outcome"] == "NO-GO" and verdict["items"][item]["status"] == "no-go", verdict
    assert [i for i, v in verdict["items"].items() if v["status"] == "no-go"] == [item]
    assert f"- **Will it serve:** NO-GO (from the hub ({repo_id}@" in (folder / "handoff.md").read_text()
    fetched = [r["path"] for r in sbx.hub.requests()[seen:] if "/resolve/" in r["path"]]
    assert all(p.endswith(("/config.json", "/model.safetensors.index.json")) for p in fetched), fetched
    assert not any(node_dir(sbx, k).parent.joinpath(repo_id.replace("/", "--")).exists() for k in (1, 2))
    if sr.DOES_NOT_FIT == repo_id:  # the sandbox's premise: its nodes cannot hold 713 GB
        assert verdict["items"]["memory"]["available_bytes"] < sr.DOES_NOT_FIT_BYTES


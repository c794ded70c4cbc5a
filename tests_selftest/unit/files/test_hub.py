"""hub.expected_online against the sandbox hub, expected_from_cache after a real `hf download`, and
filter_include with hf's pattern semantics."""

from __future__ import annotations

import pytest

from modeldrop.errors import NodeError
from modeldrop.hub import expected_from_cache, expected_online, filter_include
from tests_selftest.support.hub_fixture import hub  # noqa: F401 - fixture


def test_filter_include_semantics():
    paths = ["config.json", "sub/x.json", "model-00001.safetensors", "Sub/y.txt", "sub/deep/z.bin", "a.gguf"]
    assert filter_include(paths, []) == paths
    assert filter_include(paths, ["*.json"]) == ["config.json", "sub/x.json"]  # '*' crosses '/'
    assert filter_include(paths, ["sub/"]) == ["sub/x.json", "sub/deep/z.bin"]  # trailing '/' -> everything below
    assert filter_include(paths, ["*.SAFETENSORS"]) == []  # case-sensitive
    assert filter_include(paths, ["*.gguf", "config.json"]) == ["config.json", "a.gguf"]


def test_expected_online_lists_the_tree_at_the_commit(hub):  # noqa: F811
    exp = expected_online(hub.repo, endpoint=hub.url)
    assert exp.source == "hub" and len(exp.commit) == 40 and exp.commit == hub.handle.commit(hub.repo)
    assert set(exp.files) == set(hub.tree)
    shard = "model-00001-of-00003.safetensors"
    assert exp.files[shard].size == hub.tree[shard]["size"] and exp.files[shard].sha256 == hub.tree[shard]["sha256"]
    assert exp.files["config.json"].sha256 is None and exp.files["config.json"].blob_id == hub.tree["config.json"][
        "blob_id"]
    only = expected_online(hub.repo, endpoint=hub.url, include=["*.json"])
    assert set(only.files) == {"config.json", "tokenizer.json", "model.safetensors.index.json"}


def test_expected_online_unknown_repo_is_one_line(hub):  # noqa: F811
    with pytest.raises(NodeError) as exc:
        expected_online("nobody/nothing", endpoint=hub.url)
    assert "\n" not in str(exc.value) and "nobody/nothing" in str(exc.value)


def test_expected_from_cache_without_tree():
    assert expected_from_cache({"tree": None}) is None
    m = {"tree": {"commit": "a" * 40, "files": {"a.json": {"size": 3, "blob_id": "b", "lfs_sha256": None},
                                                "w.safetensors": {"size": 9, "blob_id": "c", "lfs_sha256": "d"}}}}
    exp = expected_from_cache(m, include=["*.json"])
    assert exp.source == "cache" and list(exp.files) == ["a.json"] and exp.total_size == 3


def test_verify_expectation_falls_back_past_an_unreadable_tree():
    """This node's tree is there but unreadable (files {}): node 1's tree is used, not no expectation at all."""
    from modeldrop.verify import expectation

    broken = {"tree": {"commit": "c2", "path": ".cache/huggingface/trees/c2.json", "files": {},
                       "error": "ValueError: truncated"}}
    node1 = {"tree": {"commit": "c1", "files": {"config.json": {"size": 10, "blob_id": "b", "lfs_sha256": None}}}}
    exp = expectation(broken, None, node1)
    assert exp is not None and exp.commit == "c1" and exp.source == "cache"
    assert expectation(broken, None, None) is None


def test_expected_online_retries_a_rate_limit(hub):  # noqa: F811
    """A 429 on the first hub call is retried (tenacity) and the listing still succeeds; a 404 is not retried."""
    import requests

    requests.post(f"{hub.url}/_sandbox/faults", json={"rate_limit_429": {"scope": "all", "retry_after": 0, "times": 1}},
                  timeout=5).raise_for_status()
    try:
        exp = expected_online(hub.repo, endpoint=hub.url)
    finally:
        requests.post(f"{hub.url}/_sandbox/faults", json={}, timeout=5)
    assert exp.files and exp.source == "hub"
    from modeldrop.hub import transient

    class Err(Exception):
        def __init__(self, status):
            self.response = type("R", (), {"status_code": status})()

    assert transient(Err(429)) and transient(Err(503)) and not transient(Err(404)) and not transient(ValueError())

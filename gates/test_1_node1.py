"""Phases 1 and 1A — node 1 downloads the model with the real hf CLI, then its files are verified."""

import pytest

from gates.steps import download_step, verify_step


@pytest.mark.gate("node1_download")
def test_node1_download(run_config, node_pool, evidence, live, hub_expectation, parallel_downloads, hf_limit_s):
    """`hf download` into MODEL_DIR_NODE1 exits 0 (with progress heartbeats)."""
    download_step(1, run_config, node_pool, evidence, live, hub_expectation, parallel_downloads, hf_limit_s)


@pytest.mark.gate("node1_verify")
def test_node1_verify(run_config, node_pool, run_facts, run_folder, evidence, hub_expectation):
    """No markers anywhere, one format, config, index + every shard, headers, counts, total size."""
    verify_step(1, run_config, node_pool, run_facts, run_folder, evidence, hub_expectation)

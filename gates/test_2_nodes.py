"""Phases 2 and 2A — the same download and verification for nodes 2..N, one gate per node."""

import pytest

from gates.steps import download_step, verify_step


@pytest.mark.gate("node{k}_download", per_node_from=2)
def test_nodeK_download(k, run_config, node_pool, evidence, live, hub_expectation, parallel_downloads, hf_limit_s):
    """`hf download` into MODEL_DIR_NODEk exits 0 (with progress heartbeats)."""
    download_step(k, run_config, node_pool, evidence, live, hub_expectation, parallel_downloads, hf_limit_s)


@pytest.mark.gate("node{k}_verify", per_node_from=2)
def test_nodeK_verify(k, run_config, node_pool, run_facts, run_folder, evidence, hub_expectation):
    """MODEL_DIR_NODEk is complete, by the same checks as node 1."""
    verify_step(k, run_config, node_pool, run_facts, run_folder, evidence, hub_expectation)

"""Phases 2 and 2A — the same download and verification for nodes 2..N, one gate per node."""

import pytest

from fixtures.downloads import check_download
from fixtures.verify import check_files


@pytest.mark.gate("node{k}_download", per_node_from=2)
def test_nodeK_download(k, downloads, evidence):
    """`hf download` into MODEL_DIR_NODEk exits 0 (with progress heartbeats)."""
    check_download(k, downloads, evidence)


@pytest.mark.gate("node{k}_verify", per_node_from=2)
def test_nodeK_verify(k, run_config, node_pool, run_facts, run_folder, evidence, hub_expectation, progress):
    """MODEL_DIR_NODEk is complete, by the same checks as node 1."""
    check_files(k, run_config, node_pool, run_facts, run_folder, evidence, hub_expectation, progress)

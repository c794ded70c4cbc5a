"""Phases 1 and 1A — node 1 downloads the model with the real hf CLI, then its files are verified."""

import pytest

from fixtures.downloads import check_download
from fixtures.verify import check_files


@pytest.mark.gate("node1_download")
def test_node1_download(downloads, evidence):
    """`hf download` into MODEL_DIR_NODE1 exits 0 (with progress heartbeats)."""
    check_download(1, downloads, evidence)


@pytest.mark.gate("node1_verify")
def test_node1_verify(run_config, node_pool, run_facts, run_folder, evidence, hub_expectation, progress):
    """No markers anywhere, one format, config, index + every shard, headers, counts, total size."""
    check_files(1, run_config, node_pool, run_facts, run_folder, evidence, hub_expectation, progress)

"""Fixtures of the whole runs: `clean` (the shared file-gate sandbox, wiped) and `sbx` (a cluster sandbox)."""

from __future__ import annotations

import os
import shutil

import pytest

from sandbox.cluster import Sandbox
from tests_selftest.support.slots import SANDBOX_BASE


@pytest.fixture
def clean(sandbox, tmp_path):
    """Both nodes' model dirs (and copies in ~/Models, which preflight's dir-mismatch check sees) wiped, hub
    faults off; yields (sandbox, report dir)."""
    for k in (1, 2):
        sandbox.reset_node_files(k)
        shutil.rmtree(sandbox.node_home(k) / "Models", ignore_errors=True)
    sandbox.hub.set_faults({})
    yield sandbox, tmp_path / "reports"
    sandbox.hub.set_faults({})


@pytest.fixture(scope="module")
def sbx(worker_id):
    """A 2-node sandbox of its own slot (MODELDROP_CLUSTER_SLOT, default 20, + xdist worker), so file-gate runs
    can go in parallel; two sessions at once need different MODELDROP_CLUSTER_SLOT values."""
    idx = int(worker_id[2:]) if worker_id.startswith("gw") else 0
    slot = int(os.environ.get("MODELDROP_CLUSTER_SLOT", "20")) + idx
    box = Sandbox(root=SANDBOX_BASE / f"cluster-slot{slot}", slot=slot, n_nodes=2)
    box.up()
    yield box
    box.down()

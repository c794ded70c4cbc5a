"""Fixtures of the whole runs: `clean` (the shared file-gate sandbox, wiped) and `sbx` (a cluster sandbox)."""

from __future__ import annotations

import shutil

import pytest

from sandbox import Sandbox
from tests_selftest.support.cluster_runs import quick_edges
from tests_selftest.support.slots import SANDBOX_BASE, slot


@pytest.fixture
def clean(sandbox, tmp_path):
    """Both nodes' model dirs (and copies in ~/Models, which preflight's dir-mismatch check sees) wiped, hub
    faults off, EXO's edge probe every 2 s for the test (`quick_edges`); yields (sandbox, report dir)."""
    for k in (1, 2):
        sandbox.reset_node_files(k)
        shutil.rmtree(sandbox.node_home(k) / "Models", ignore_errors=True)
    sandbox.hub.set_faults({})
    quick_edges(sandbox)
    yield sandbox, tmp_path / "reports"
    sandbox.hub.set_faults({})
    for k in (1, 2):
        sandbox.set_exo_timing(k, {})


@pytest.fixture(scope="session")
def sbx():
    """A 2-node sandbox for the EXO-gate runs (this worker's "cluster" slot), shared by the session's cluster and
    interrupt runs: each test's own cleanup leaves it with no process running, faults off and NEW EXO."""
    n = slot("cluster")
    box = Sandbox(root=SANDBOX_BASE / f"cluster-slot{n}", slot=n, n_nodes=2)
    box.up()
    yield box
    box.down()

"""Self-test fixtures: pytester for the plugin, and one sandbox per xdist worker (its own slot)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests_selftest.support.slots import SANDBOX_BASE
from tests_selftest.support.sshd_fixture import SSHD, SSHDHandle, start_sshd

pytest_plugins = ["pytester", "tests_selftest.support.fault_plugin", "tests_selftest.support.runjson_check"]


def pytest_configure(config: pytest.Config) -> None:
    """The interrupt self-tests send SIGINT to the runs they start. A shell that starts a job in the background
    (`nohup … &`, a CI step run with `&`) leaves SIGINT ignored, and an ignored signal stays ignored across
    exec: every run would shrug off its Ctrl-C. Restore Python's handler here, so runs started from this
    process get the default disposition (a handled signal is reset on exec) and install their own."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _worker_index(worker_id: str) -> int:
    """0 for a plain run, N for xdist worker gwN."""
    return int(worker_id[2:]) if worker_id.startswith("gw") else 0


@pytest.fixture(scope="session")
def sandbox_slot(worker_id: str) -> int:
    """This worker's sandbox slot: MODELDROP_SELFTEST_SLOT_BASE (default 1) + the worker index.

    Slot 0 is left to the demo (`pytest gates/ --sandbox`)."""
    return int(os.environ.get("MODELDROP_SELFTEST_SLOT_BASE", "1")) + _worker_index(worker_id)


@pytest.fixture(scope="session")
def sandbox(sandbox_slot: int) -> Iterator[object]:
    """A 2-node sandbox for this worker, built once, stopped at the end of the session."""
    from sandbox.cluster import Sandbox

    sbx = Sandbox(root=SANDBOX_BASE / f"slot{sandbox_slot}", slot=sandbox_slot, n_nodes=2)
    sbx.up()
    try:
        yield sbx
    finally:
        sbx.down()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHDHandle]:
    """A private sshd logging in as this user (root and OpenSSH's sshd needed, else the test is skipped)."""
    if not os.access(SSHD, os.X_OK) or os.geteuid() != 0:
        pytest.skip(f"needs root and {SSHD} (apt-get install openssh-server)")
    handle = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield handle
    handle.stop()

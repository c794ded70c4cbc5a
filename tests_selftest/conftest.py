"""Self-test fixtures: pytester for the plugin, and one sandbox per xdist worker (its own slot, support/slots.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The library imports these lazily (a run that draws nothing pays nothing). pytester's in-process runs restore
# sys.modules afterwards: a module first imported inside one run is dropped while objects of it live on, and the
# next run's fresh copy rejects them ("'transform' must be an instance of matplotlib.transforms.Transform"; a
# PyO3 extension such as tokenizers cannot be initialised twice). Imported here, before any run, they are kept.
import matplotlib.backends.backend_agg  # noqa: F401
import matplotlib.figure  # noqa: F401
import pytest
import tokenizers  # noqa: F401
from xdist.scheduler import WorkStealingScheduling

from modeldrop import loggers
from sandbox import Sandbox
from tests_selftest.support import userdirs
from tests_selftest.support.slots import SANDBOX_BASE, slot
from tests_selftest.support.sshd_fixture import SSHD, SSHDHandle, start_sshd

pytest_plugins = ["pytester", "tests_selftest.support.fault_plugin", "tests_selftest.support.runjson_check"]
USER_DIRS = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """The interrupt self-tests send SIGINT to the runs they start. A shell that starts a job in the background
    (`nohup … &`, a CI step run with `&`) leaves SIGINT ignored, and an ignored signal stays ignored across
    exec: every run would shrug off its Ctrl-C. Restore Python's handler here, so runs started from this
    process get the default disposition (a handled signal is reset on exec) and install their own."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    loggers.install()  # this process's threads (sandbox servers, SSH) create loggers while tests start and end
    if not hasattr(config, "workerinput"):  # the controller; xdist workers inherit its environment
        config.stash[USER_DIRS] = userdirs.isolate()


def pytest_unconfigure(config: pytest.Config) -> None:
    if USER_DIRS in config.stash:
        userdirs.remove(config.stash[USER_DIRS])


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`-n N` alone schedules by work stealing: a worker that runs out takes half of the other's queue, so the
    whole runs at the front of the collection (runs/) never leave one worker busy while the other idles.
    An explicit `--dist` is kept."""
    if config.getoption("dist") == "load" and not any(a.startswith("--dist") for a in config.invocation_params.args):
        return WorkStealingScheduling(config, log)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first, so the scheduler ends on short tests: the real-EXO runs, then the other whole runs, then the
    rest (a stable sort: each module's tests keep their order)."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("real_exo") else
               1 if item.get_closest_marker("sandbox_run") else 2)


@pytest.fixture(scope="session")
def sandbox_slot() -> int:
    """This worker's slot for the file-gate runs' sandbox (slots.slot("files"))."""
    return slot("files")


@pytest.fixture(scope="session")
def sandbox(sandbox_slot: int) -> Iterator[object]:
    """A 2-node sandbox for this worker, built once, stopped at the end of the session."""
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

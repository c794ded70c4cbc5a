"""The self-tests' sandbox slots, and where their sandboxes live.

One knob, MODELDROP_SELFTEST_SLOT_BASE (default 1; slot 0 is the demo's, `pytest gates/ --sandbox`): each
xdist worker takes a block of len(ROLES) consecutive slots from the base, one per role, so no two fixtures
or workers share a slot. Worker gwN's slot for a role is base + N * len(ROLES) + ROLES.index(role); a session
of W workers uses slots base .. base + W * len(ROLES) - 1, at most sandbox.MAX_SLOT. Sandboxes live under
MODELDROP_SELFTEST_SANDBOX (default /var/tmp/modeldrop-selftest).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import MAX_SLOT

BASE_ENV = "MODELDROP_SELFTEST_SLOT_BASE"
SANDBOX_BASE = Path(os.environ.get("MODELDROP_SELFTEST_SANDBOX", "/var/tmp/modeldrop-selftest"))
ROLES = (
    "files",  # the shared 2-node sandbox of the file-gate runs (conftest's `sandbox`), the fish-shell sshd
    "cluster",  # the 2-node sandbox of the EXO-gate runs on the emulator (runs/conftest's `sbx`)
    "real",  # the 2-node sandbox of the real-EXO runs (runs/test_real_exo)
    "sbxtest",  # the sandbox the sandbox's own tests bring up and tear down (unit/sandbox/test_cluster)
    "local",  # one-node local sandboxes and the transport stand-in's addresses (unit/sandbox)
    "four",  # the 4-node emulator sandbox of the scale runs (runs/test_scale)
    "three",  # the 3-node real-EXO sandbox of the scale runs (runs/test_scale)
    "emulator",  # 127.<10+slot>.*.*: the emulator tests' own clusters (support.emulator_fixtures.fresh_subnet)
)


def worker_index() -> int:
    """0 outside xdist, N in xdist worker gwN."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") else 0


def slot(role: str) -> int:
    """This worker's slot for `role` (one of ROLES)."""
    raw = os.environ.get(BASE_ENV, "1")
    if not raw.isdigit():
        raise pytest.UsageError(f"{BASE_ENV}={raw!r}: a slot is a number 1..{MAX_SLOT}")
    base, last = int(raw), (worker_index() + 1) * len(ROLES) - 1  # this worker's block: base .. base + last
    if not 1 <= base <= MAX_SLOT - last:
        raise pytest.UsageError(f"{BASE_ENV}={raw}: xdist worker {worker_index()} would use slots up to {base + last}, "
                                f"past sandbox.MAX_SLOT {MAX_SLOT}; choose a base of 1..{MAX_SLOT - last}")
    return base + worker_index() * len(ROLES) + ROLES.index(role)

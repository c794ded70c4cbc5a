"""`--sandbox`: build or reuse the local sandbox cluster and hand its env file to the modeldrop plugin.

Registered from the root conftest. Implements the modeldrop plugin's `pytest_modeldrop_env_file` and
`pytest_modeldrop_rerun_args` hooks, so the library never imports the sandbox. The sandbox lives
under /var/tmp/modeldrop-sandbox/slot<S>, S from MODELDROP_SANDBOX_SLOT (0..239, default 0), so
several checkouts can run side by side.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from modeldrop.errors import InputError
from modeldrop.ledger.handoff import one_line
from sandbox import MAX_SLOT

SANDBOX_SLOT_ENV = "MODELDROP_SANDBOX_SLOT"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("modeldrop", "modeldrop gates and ledger")
    group.addoption("--sandbox", action="store_true", default=False, dest="modeldrop_sandbox",
                    help="build or reuse the local sandbox cluster and run against it")
    group.addoption("--sandbox-nodes", action="store", type=int, default=None, dest="modeldrop_sandbox_nodes",
                    metavar="N", help="number of sandbox nodes (1-4, default 2)")
    group.addoption("--sandbox-generation", action="store", default=None, choices=("new", "old"),
                    dest="modeldrop_sandbox_generation", help="exo generation the sandbox emulates")
    group.addoption("--sandbox-exo", action="store", default=None, choices=("real", "emulator"),
                    dest="modeldrop_sandbox_exo",
                    help="the sandbox nodes' EXO: real (EXO's own code; the default where it can be built) or emulator")
    group.addoption("--sandbox-topology", action="store", default=None, choices=("mesh", "ring"),
                    dest="modeldrop_sandbox_topology",
                    help="how the sandbox nodes are cabled: mesh (default: every node reaches every other) or ring "
                         "(each reaches only its two neighbours, as four Macs on Thunderbolt with no shared LAN)")


def sandbox_slot() -> int:
    """The demo's sandbox slot: MODELDROP_SANDBOX_SLOT (0..MAX_SLOT), else 0."""
    raw = os.environ.get(SANDBOX_SLOT_ENV, "0")
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_SLOT:
        raise pytest.UsageError(f"{SANDBOX_SLOT_ENV}={raw!r}: a sandbox slot is a number 0..{MAX_SLOT}")
    return int(raw)


def pytest_modeldrop_env_file(config: pytest.Config) -> Path | None:
    """Under --sandbox: bring the sandbox up (or reuse it) and return its env file (UsageError when unavailable)."""
    if not config.getoption("modeldrop_sandbox"):
        return None
    try:
        from sandbox.cluster import Sandbox
    except Exception as e:  # noqa: BLE001 - any import problem is a usage error here
        raise pytest.UsageError(f"--sandbox: the sandbox is unavailable ({type(e).__name__}: {e})") from None
    n = config.getoption("modeldrop_sandbox_nodes")
    n = 2 if n is None else n
    if not 1 <= n <= 4:
        raise pytest.UsageError(f"--sandbox-nodes {n}: the sandbox has 1 to 4 nodes (as the suite: 1–4 Macs)")
    slot = sandbox_slot()
    kwargs: dict[str, Any] = {"root": Path(f"/var/tmp/modeldrop-sandbox/slot{slot}"), "slot": slot, "n_nodes": n}
    gen = config.getoption("modeldrop_sandbox_generation")
    if gen and "generation" in inspect.signature(Sandbox).parameters:
        kwargs["generation"] = gen
    if "exo" in inspect.signature(Sandbox).parameters:
        kwargs["exo"] = config.getoption("modeldrop_sandbox_exo") or "auto"
    if config.getoption("modeldrop_sandbox_topology"):
        kwargs["topology"] = config.getoption("modeldrop_sandbox_topology")
    try:
        box = Sandbox(**kwargs)
        if getattr(box, "exo_note", ""):
            print(f"--sandbox: {box.exo_note}", file=sys.stderr)
        if config.get_verbosity() >= 0:  # a progress line: -q shows pytest's own output only
            print(f"--sandbox: bringing up {n} node(s) in {kwargs['root']} (reused when it is up) …", file=sys.stderr,
                  flush=True)
        box.up()
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise pytest.UsageError(f"--sandbox: could not bring the sandbox up: {type(e).__name__}: "
                                f"{one_line(e)}") from None
    return Path(box.env_file)


def pytest_modeldrop_rerun_args(config: pytest.Config) -> list[str]:
    """`--sandbox` and its options as given, for printed rerun commands."""
    if not config.getoption("modeldrop_sandbox"):
        return []
    argv = ["--sandbox"]
    for dest, flag in (("modeldrop_sandbox_nodes", "--sandbox-nodes"),
                       ("modeldrop_sandbox_generation", "--sandbox-generation"),
                       ("modeldrop_sandbox_exo", "--sandbox-exo"),
                       ("modeldrop_sandbox_topology", "--sandbox-topology")):
        if config.getoption(dest):
            argv += [flag, str(config.getoption(dest))]
    return argv

"""Hooks the modeldrop plugin offers to other plugins (the sandbox provides nodes through them)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.hookspec(firstresult=True)
def pytest_modeldrop_env_file(config: pytest.Config) -> Path | None:
    """The env file of nodes a plugin provides for this run (the sandbox's under `--sandbox`), or None."""


@pytest.hookspec
def pytest_modeldrop_rerun_args(config: pytest.Config) -> list[str]:
    """Arguments a printed rerun command must repeat to reach the same nodes (e.g. `--sandbox`)."""

"""Command-line options of a gate run and the configuration they resolve to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modeldrop.config import DEFAULT_ENV_FILE, OPTIONS


def dest(key: str) -> str:
    """The argparse dest of a config key's flag."""
    return f"modeldrop_{key.lower()}"


def add_options(parser: pytest.Parser) -> None:
    """Register every `config.OPTIONS` flag (bools as store_true, default None = not given) and --env-file."""
    group = parser.getgroup("modeldrop", "modeldrop gates and ledger")
    for opt in OPTIONS:
        if not opt.flag:
            continue
        if opt.kind == "bool":
            group.addoption(opt.flag, action="store_true", default=None, dest=dest(opt.key), help=opt.help)
        else:
            metavar = "|".join(opt.choices) if opt.choices else opt.key
            group.addoption(opt.flag, action="store", default=None, dest=dest(opt.key), metavar=metavar,
                            help=opt.help)
    group.addoption("--env-file", action="store", default=None, dest="modeldrop_env_file", metavar="PATH",
                    help=f"env file of config keys (default {DEFAULT_ENV_FILE} when it exists)")


def cli_values(config: pytest.Config) -> dict[str, Any]:
    """{OPTION key: value} for the flags given on the command line (None = not given)."""
    return {opt.key: config.getoption(dest(opt.key), None) for opt in OPTIONS if opt.flag}


def is_gate_run(config: pytest.Config) -> bool:
    """True when the session's paths lie under gates/ or benchmarks/ (and not tests_selftest/)."""
    base = config.invocation_params.dir
    for arg in config.args:
        parts = (base / arg.split("::")[0]).resolve().parts
        if "tests_selftest" in parts:
            continue
        if "gates" in parts or "benchmarks" in parts:
            return True
    return False


def runs_gates(config: pytest.Config) -> bool:
    """True when the session's paths include gates/ (a bootstrap), not only benchmarks/."""
    base = config.invocation_params.dir
    return any("gates" in (base / arg.split("::")[0]).resolve().parts for arg in config.args)


def env_file(config: pytest.Config) -> tuple[Path | None, bool]:
    """(env file, provided by a plugin): a plugin's (the sandbox's), --env-file, else config/model_drop.env."""
    provided = config.hook.pytest_modeldrop_env_file(config=config)
    if provided is not None:
        return Path(provided), True
    given = config.getoption("modeldrop_env_file")
    if given:
        path = Path(given).expanduser()
        return (path if path.is_absolute() else config.invocation_params.dir / path), False
    default = config.invocation_params.dir / DEFAULT_ENV_FILE
    return (default if default.exists() else None), False


def refuse_xdist(config: pytest.Config) -> None:
    """xdist is for tests_selftest/ only: gates share one cluster and must run in order."""
    n = config.getoption("numprocesses", None)
    dist = config.getoption("dist", "no")
    if n or (dist and dist != "no"):
        raise pytest.UsageError("-n/--dist: gates and benchmarks run serially against one cluster; "
                                "xdist is only for tests_selftest/ (drop -n)")

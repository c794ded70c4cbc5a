"""The rerun commands a run prints: its gates or its benchmarks, with the options that matter."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from modeldrop.config import OPTION_BY_KEY, RunConfig
from modeldrop.plugin.options import cli_values

# Options that do not belong in a printed rerun command (the command adds its own selection).
NOT_RERUN = {"RESUME_BOOTSTRAP", "EXO_API_URLS"}
NOT_BENCH = {"RESUME_BOOTSTRAP", "AUDIT", "FAST", "PARALLEL_DOWNLOADS", "KEEP_DOWNLOADING"}


def pytest_prog() -> list[str]:
    """`pytest` when the pytest on PATH is this interpreter's, else `<python> -m pytest`."""
    found = shutil.which("pytest")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return ["pytest"]
    return [sys.executable, "-m", "pytest"]


def suite_dir(config: pytest.Config, name: str) -> str:
    """`gates/` (or `benchmarks/`) as a path from the invocation dir, from the session's paths."""
    base = config.invocation_params.dir
    for arg in config.args:
        p = (base / arg.split("::")[0]).resolve()
        for anc in (p, *p.parents):
            if anc.name in ("gates", "benchmarks"):
                target = anc.parent / name
                try:
                    rel = target.relative_to(base.resolve())
                    return f"{rel}/" if str(rel) != "." else "./"
                except ValueError:
                    return f"{target}/"
    return f"{name}/"


def rerun_argv(config: pytest.Config, cfg: RunConfig, env_file: Path | None, bench: bool) -> list[str]:
    """The command that reruns this run's gates (or its benchmarks) with the options that matter."""
    argv = [*pytest_prog(), suite_dir(config, "benchmarks" if bench else "gates"), "--model", cfg.model_id]
    for key, value in cli_values(config).items():
        if value in (None, False) or key == "MODEL_ID" or key in (NOT_BENCH if bench else NOT_RERUN):
            continue
        flag = OPTION_BY_KEY[key].flag
        argv += [flag] if value is True else [flag, str(value)]
    provided = [a for args in config.hook.pytest_modeldrop_rerun_args(config=config) for a in args]
    if provided:
        argv += provided
    elif config.getoption("modeldrop_env_file") and env_file is not None:
        argv += ["--env-file", config.getoption("modeldrop_env_file")]
    if bench:  # the --bench-* shape decides the case ids a printed `-k` names (fixtures/bench.py)
        argv += bench_args(list(config.invocation_params.args))
    return argv


def bench_args(args: list[str]) -> list[str]:
    """The `--bench-*` options (each takes a value) as given on the command line."""
    out: list[str] = []
    for i, a in enumerate(args):
        if a.startswith("--bench-") and "=" in a:
            out.append(a)
        elif a.startswith("--bench-") and i + 1 < len(args):
            out += [a, args[i + 1]]
    return out

"""The start of a gate run: resolve the configuration, create the run folder, pass cache and ledger."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from modeldrop import gatetable, profiles, signatures
from modeldrop.config import RunConfig, load_config
from modeldrop.errors import InputError
from modeldrop.ledger import GateRecord, Ledger, RunState
from modeldrop.ledger.passcache import PassCache
from modeldrop.ledger.runfolder import RUN_FOLDER_FILE_ENV, RunFolder
from modeldrop.plugin import options
from modeldrop.plugin.commands import rerun_argv
from modeldrop.plugin.session import GateSession
from modeldrop.redaction import secret_values


def start_run(config: pytest.Config) -> tuple[GateSession, str | None]:
    """(the session, a profile warning or None); any bad input becomes a one-line UsageError."""
    try:
        env_file, provided = options.env_file(config)
        cfg = load_config(options.cli_values(config), env_file=env_file, sandbox=provided)
        warning = profiles.status_gate(cfg.profile, cfg.model_id, allow_blocked=cfg.allow_blocked_model)
    except InputError as e:
        raise pytest.UsageError(str(e)) from None
    try:
        return new_session(config, cfg, env_file), warning
    except OSError as e:  # e.g. a report dir that is a file or cannot be created
        where = cfg.sources.get("RUN_REPORT_DIR", "RUN_REPORT_DIR")
        raise pytest.UsageError(f"{where} (RUN_REPORT_DIR): cannot create a run folder under {cfg.report_dir}: "
                                f"{e.strerror or e}") from None


def new_session(config: pytest.Config, cfg: RunConfig, env_file: Path | None) -> GateSession:
    """Create the run folder, pass cache and ledger, and write the first ledger records."""
    reports = cfg.report_dir if cfg.report_dir.is_absolute() else config.invocation_params.dir / cfg.report_dir
    scratch = None
    if config.option.collectonly:  # a look at the gates is not a run: a scratch folder, removed at the end
        reports = scratch = Path(tempfile.mkdtemp(prefix="modeldrop-collect-"))
    folder = RunFolder.create(reports, cfg.model_folder)
    pointer = os.environ.get(RUN_FOLDER_FILE_ENV)
    if pointer and scratch is None:
        Path(pointer).write_text(str(folder.path) + "\n", encoding="utf-8")
    order = gatetable.gate_order(len(cfg.nodes), audit=bool(cfg.audit))
    secrets = secret_values(cfg.values)
    state = RunState(
        run_id=folder.run_id, started=time.time(), model_id=cfg.model_id,
        nodes=[n.target for n in cfg.nodes], model_dirs=[n.model_dir for n in cfg.nodes],
        command=["pytest", *config.invocation_params.args], base_argv=rerun_argv(config, cfg, env_file, bench=False),
        bench_argv=rerun_argv(config, cfg, env_file, bench=True), order=order,
        gates={g: GateRecord(g) for g in order}, audit=bool(cfg.audit),
        pass_cache=str(folder.report_dir / "pass_cache.json"), signature_table=signatures.table_rows())
    ledger = Ledger(folder, state, secrets)
    ledger.begin(options={k: v for k, v in cfg.redacted().items() if k != "nodes"},
                 env_file=str(env_file) if env_file else None, sources=cfg.sources)
    def warn(line: str) -> None:  # the terminal at once, and the hand-off's warnings
        sys.stderr.write(f"modeldrop: {line}\n")
        ledger.warning(line)

    cache = PassCache(folder.report_dir / "pass_cache.json", secrets, warn=warn)
    return GateSession(cfg=cfg, folder=folder, ledger=ledger, cache=cache, order=order, secrets=secrets,
                       scratch=scratch)

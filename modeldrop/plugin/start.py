"""The start of a gate run: resolve the configuration, create the run folder, pass cache and ledger."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from modeldrop import gatetable, profiles, signatures, statedirs
from modeldrop.config import RunConfig, load_config
from modeldrop.errors import InputError
from modeldrop.exo import serving_check as serving
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
        checkout = None if statedirs.is_installed_suite(config.rootpath) else config.rootpath
        cfg = load_config(options.cli_values(config), env_file=env_file, sandbox=provided, checkout=checkout)
        warning = profiles.status_gate(cfg.profile, cfg.model_id, allow_blocked=cfg.allow_blocked_model)
        checks = exo_api_checks(config, cfg)
    except InputError as e:
        raise pytest.UsageError(str(e)) from None
    try:
        gs = new_session(config, cfg, env_file)
    except OSError as e:  # e.g. a report dir that is a file or cannot be created
        where = cfg.sources.get("RUN_REPORT_DIR", "the default run folder dir")
        raise pytest.UsageError(f"{where} (RUN_REPORT_DIR): cannot create a run folder under {cfg.report_dir}: "
                                f"{e.strerror or e}; set RUN_REPORT_DIR (or --report-dir) to a folder you can "
                                "write") from None
    if checks:
        record_exo_api(gs, checks)
    return gs, warning


def exo_api_checks(config: pytest.Config, cfg: RunConfig) -> list[serving.ServingCheck]:
    """`--exo-api`: benchmarks only, and one real chat through each URL now, before the run folder exists (a URL
    that does not answer, is not EXO or serves no instance of the model is an InputError: exit 4)."""
    if not cfg.exo_api_urls:
        return []
    if options.runs_gates(config):
        raise InputError(f"{cfg.sources.get('EXO_API_URLS', '--exo-api')} (EXO_API_URLS): benchmarks an EXO that is "
                         f"already serving; run `pytest benchmarks/ --exo-api ... --model {cfg.model_id}` "
                         "(gates/ bootstrap their own cluster)")
    if config.option.collectonly:
        return []
    return serving.check_serving(cfg.exo_api_urls, cfg.model_id, cfg.chat_timeout_s)


def record_exo_api(gs: GateSession, checks: list[serving.ServingCheck]) -> None:
    """The serving check in the run folder (exo/serving_check.json) and the ledger."""
    gs.exo_api = list(checks)
    doc = {"model_id": gs.cfg.model_id, "fingerprint": serving.fingerprint(checks, gs.cfg.model_id),
           "checks": [c.as_dict() for c in checks]}
    gs.folder.write_json("exo/serving_check.json", doc)
    gs.ledger.note(None, "exo_api_serving_check", doc)


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
    not_recorded = None if scratch is not None else statedirs.record_last_run(folder.path)
    if not_recorded:
        warn(not_recorded)
    return GateSession(cfg=cfg, folder=folder, ledger=ledger, cache=cache, order=order, secrets=secrets,
                       scratch=scratch)


CACHE_WRITERS = ("lfplugin", "nfplugin", "stepwiseplugin")  # pytest's cacheprovider plugins that write .pytest_cache


def keep_cache_out_of_package(config: pytest.Config) -> None:
    """A gate run of the suite a wheel installed writes nothing inside the package: pytest's cache plugins (which
    write .pytest_cache in the rootdir at session end) are blocked; `--lf` and friends are for checkouts."""
    if statedirs.is_installed_suite(config.rootpath):
        for name in CACHE_WRITERS:
            config.pluginmanager.set_blocked(name)

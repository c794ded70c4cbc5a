"""modeldrop's pytest layer: options, the gate graph, skip-with-reason, pass reuse and the run ledger.

The only module of `modeldrop/` that imports pytest. Registered from the root conftest
(`pytest_plugins = ["modeldrop.plugin", "fixtures.core", "fixtures.ledger", …]`).

Contract:
- Options: every `config.OPTIONS` entry with a flag (bools as store_true with default None, so "not
  given" falls through to environment / env file), `--env-file`, `--sandbox`, `--sandbox-nodes`,
  `--sandbox-generation`.
- A *gate run* is a session whose paths lie under `gates/` or `benchmarks/` (not `tests_selftest/`).
  For a gate run `pytest_configure` builds the RunConfig, applies the profile status gate and creates
  the run folder (ledger.html, ledger.jsonl, handoff.md). Any InputError becomes `pytest.UsageError`:
  one `ERROR:` line, exit status 4, no traceback, no node touched. `-n`/xdist is refused.
- Gates: `@pytest.mark.gate("id")`, per-node `@pytest.mark.gate("node{k}_x", per_node_from=2)` with an
  int argument `k` (parametrized `node2`…`nodeN`). Items are sorted by `gatelist.gate_order`, gates
  outside the active order are deselected, the gate id is a `-k` keyword and a user property.
- A gate whose upstream failed or skipped is skipped before its fixtures run, naming the root cause:
  `blocked by <gate> (<outcome>): <first line>`. An upstream not run in this session (deselected by
  `-k`, or not collected) counts only through a fresh matching pass in the pass cache; otherwise the
  dependent skips with `no reusable pass for <gate>: …`. `--resume-bootstrap` reuses every leading
  gate with a fresh matching pass and runs from the first without one.
- Every pass is recorded in `<report_dir>/pass_cache.json` with its fingerprint as soon as it passes.
- Accessors for fixtures: `run_config_of`, `run_folder_of`, `node_pool_of`, `facts_of`,
  `ledger_of`, `pass_cache_of`, `evidence_for`, `gate_id`.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modeldrop import gatelist, profiles
from modeldrop.config import DEFAULT_ENV_FILE, OPTION_BY_KEY, OPTIONS, RunConfig, effective, load_config
from modeldrop.errors import InputError
from modeldrop.ledger import Evidence, GateRecord, Ledger, RunState
from modeldrop.ledger import html as lhtml
from modeldrop.ledger.fingerprint import digest, explain_change, fingerprint_parts
from modeldrop.ledger.handoff import dur, green, one_line
from modeldrop.ledger.passcache import PassCache, PassRecord
from modeldrop.ledger.runfolder import RunFolder

GATE_MARKER = "gate(name, per_node_from=None): a phase gate of the bootstrap (see modeldrop.gatelist)"
# The demo's sandbox slot (0); MODELDROP_SANDBOX_SLOT moves it, so several checkouts can run side by side.
SANDBOX_SLOT_ENV = "MODELDROP_SANDBOX_SLOT"
RUN_FOLDER_FILE_ENV = "MODELDROP_RUN_FOLDER_FILE"
# Each limit leaves the node-side limits inside the gate (and their cleanup) their time: checked by
# tests_selftest/test_timeout_nesting.py against the library's own constants.
DEFAULT_TIMEOUTS_S: dict[str, float] = {
    "preflight": 2400, "download": 4 * 3600 + 900, "verify": 9000, "canary": 900, "parity": 900,
    "startup": 1200, "cluster": 1200, "placement": 3600, "transport": 1800, "chat": 1800,
}
# Options that do not belong in a printed rerun command (the command adds its own selection).
_NOT_RERUN = {"RESUME_BOOTSTRAP"}
_NOT_BENCH = {"RESUME_BOOTSTRAP", "AUDIT", "FAST"}


# ---------------------------------------------------------------------------------------------
# session state
# ---------------------------------------------------------------------------------------------
@dataclass
class GateSession:
    """Everything the plugin keeps for one gate run (on `config.stash[SESSION_KEY]`)."""

    cfg: RunConfig
    folder: RunFolder
    ledger: Ledger
    cache: PassCache
    order: list[str]
    secrets: list[str]
    facts: Any = None
    pool: Any = None
    selected: dict[str, int] = field(default_factory=dict)  # gate -> number of selected items
    outcome: dict[str, str] = field(default_factory=dict)   # gate -> passed/failed/skipped/reused
    root: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # gate -> (root gate, outcome, reason)
    resume_broken: bool = False
    parts: dict[str, dict] = field(default_factory=dict)   # gate -> fingerprint parts last computed
    html_report: Any = None


SESSION_KEY = pytest.StashKey[GateSession]()
FACTS_KEY = pytest.StashKey[Any]()          # tests may inject a fake facts object here
POOL_KEY = pytest.StashKey[Any]()
EVIDENCE_KEY = pytest.StashKey[Any]()       # per item


# ---------------------------------------------------------------------------------------------
# accessors used by fixtures
# ---------------------------------------------------------------------------------------------
def session_of(config: pytest.Config) -> GateSession | None:
    """The gate-run state, or None (self-tests)."""
    return config.stash.get(SESSION_KEY, None)


def run_config_of(config: pytest.Config) -> RunConfig | None:
    """The validated RunConfig of a gate run, else None."""
    gs = session_of(config)
    return gs.cfg if gs else None


def run_folder_of(config: pytest.Config) -> RunFolder | None:
    """This run's folder, else None."""
    gs = session_of(config)
    return gs.folder if gs else None


def ledger_of(config: pytest.Config) -> Ledger | None:
    """This run's Ledger, else None."""
    gs = session_of(config)
    return gs.ledger if gs else None


def pass_cache_of(config: pytest.Config) -> PassCache | None:
    """The reports dir's PassCache, else None."""
    gs = session_of(config)
    return gs.cache if gs else None


def node_pool_of(config: pytest.Config) -> Any:
    """The run's NodePool (created on first use; closed at session end)."""
    gs = session_of(config)
    if gs is None:
        raise RuntimeError("no gate run: node pool unavailable")
    if gs.pool is None:
        gs.pool = config.stash.get(POOL_KEY, None)
    if gs.pool is None:
        from modeldrop.nodepool import NodePool
        gs.pool = NodePool(gs.cfg)
    return gs.pool


def facts_of(config: pytest.Config) -> Any:
    """The run's facts (`modeldrop.facts.RunFacts`, or what a test put on `config.stash[FACTS_KEY]`)."""
    gs = session_of(config)
    if gs is None:
        raise RuntimeError("no gate run: facts unavailable")
    if gs.facts is None:
        gs.facts = config.stash.get(FACTS_KEY, None)
    if gs.facts is None:
        from modeldrop.facts import RunFacts
        gs.facts = RunFacts(gs.cfg, node_pool_of(config))
    return gs.facts


def gate_id(item: pytest.Item) -> str | None:
    """The gate id of an item (`node2_verify` for a per-node gate with k=2), or None."""
    m = item.get_closest_marker("gate")
    if m is None:
        return None
    name = m.args[0] if m.args else m.kwargs.get("name")
    if not isinstance(name, str):
        return None
    if "{k}" not in name:
        return name
    k = getattr(getattr(item, "callspec", None), "params", {}).get("k")
    return name.format(k=k) if isinstance(k, int) else None


def evidence_for(item: pytest.Item) -> Any:
    """The item's Evidence (created on first use); attached to the report of every phase."""
    ev = item.stash.get(EVIDENCE_KEY, None)
    if ev is None:
        gs = session_of(item.config)
        ev = Evidence(gs.ledger if gs else None, gate_id(item), item.nodeid,
                      gs.folder if gs else None, gs.secrets if gs else ())
        item.stash[EVIDENCE_KEY] = ev
    return ev


# ---------------------------------------------------------------------------------------------
# options and configuration
# ---------------------------------------------------------------------------------------------
def _dest(key: str) -> str:
    return f"modeldrop_{key.lower()}"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the OPTIONS flags, --env-file and the sandbox options."""
    group = parser.getgroup("modeldrop", "modeldrop gates and ledger")
    for opt in OPTIONS:
        if not opt.flag:
            continue
        if opt.kind == "bool":
            group.addoption(opt.flag, action="store_true", default=None, dest=_dest(opt.key), help=opt.help)
        else:
            metavar = "|".join(opt.choices) if opt.choices else opt.key
            group.addoption(opt.flag, action="store", default=None, dest=_dest(opt.key), metavar=metavar,
                            help=opt.help)
    group.addoption("--env-file", action="store", default=None, dest="modeldrop_env_file", metavar="PATH",
                    help=f"env file of config keys (default {DEFAULT_ENV_FILE} when it exists)")
    group.addoption("--sandbox", action="store_true", default=False, dest="modeldrop_sandbox",
                    help="build or reuse the local sandbox cluster and run against it")
    group.addoption("--sandbox-nodes", action="store", type=int, default=None, dest="modeldrop_sandbox_nodes",
                    metavar="N", help="number of sandbox nodes (1-4, default 2)")
    group.addoption("--sandbox-generation", action="store", default=None, choices=("new", "old"),
                    dest="modeldrop_sandbox_generation", help="exo generation the sandbox emulates")


def cli_values(config: pytest.Config) -> dict[str, Any]:
    """{OPTION key: value} for the flags given on the command line (None = not given)."""
    return {opt.key: config.getoption(_dest(opt.key), None) for opt in OPTIONS if opt.flag}


def _is_gate_run(config: pytest.Config) -> bool:
    """True when the session's paths lie under gates/ or benchmarks/ (and not tests_selftest/)."""
    base = config.invocation_params.dir
    for arg in config.args:
        parts = (base / arg.split("::")[0]).resolve().parts
        if "tests_selftest" in parts:
            continue
        if "gates" in parts or "benchmarks" in parts:
            return True
    return False


def _sandbox_env_file(config: pytest.Config) -> Path:
    """Build or reuse the local sandbox and return its env file (UsageError when unavailable)."""
    try:
        from sandbox.cluster import Sandbox
    except Exception as e:  # noqa: BLE001 - any import problem is a usage error here
        raise pytest.UsageError(f"--sandbox: the sandbox is unavailable ({type(e).__name__}: {e})") from None
    n = config.getoption("modeldrop_sandbox_nodes") or 2
    if not 1 <= n <= 4:
        raise pytest.UsageError(f"--sandbox-nodes: {n} nodes given; the sandbox supports 1 to 4")
    slot = _sandbox_slot()
    kwargs: dict[str, Any] = {"root": Path(f"/var/tmp/modeldrop-sandbox/slot{slot}"), "slot": slot, "n_nodes": n}
    gen = config.getoption("modeldrop_sandbox_generation")
    if gen and "generation" in inspect.signature(Sandbox).parameters:
        kwargs["generation"] = gen
    try:
        box = Sandbox(**kwargs)
        box.up()
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise pytest.UsageError(f"--sandbox: could not bring the sandbox up: {type(e).__name__}: {one_line(e)}") from None
    return Path(box.env_file)


def _sandbox_slot() -> int:
    """The demo's sandbox slot: MODELDROP_SANDBOX_SLOT (0..99), else 0."""
    raw = os.environ.get(SANDBOX_SLOT_ENV, "0")
    if not raw.isdigit() or not 0 <= int(raw) <= 99:
        raise pytest.UsageError(f"{SANDBOX_SLOT_ENV}={raw!r}: a sandbox slot is a number 0..99")
    return int(raw)


def _env_file(config: pytest.Config) -> Path | None:
    """The env file: --sandbox's, --env-file, else config/model_drop.env when it exists."""
    if config.getoption("modeldrop_sandbox"):
        return _sandbox_env_file(config)
    given = config.getoption("modeldrop_env_file")
    if given:
        path = Path(given).expanduser()
        return path if path.is_absolute() else config.invocation_params.dir / path
    default = config.invocation_params.dir / DEFAULT_ENV_FILE
    return default if default.exists() else None


def _refuse_xdist(config: pytest.Config) -> None:
    """xdist is for tests_selftest/ only: gates share one cluster and must run in order."""
    n = config.getoption("numprocesses", None)
    dist = config.getoption("dist", "no")
    if n or (dist and dist != "no"):
        raise pytest.UsageError("-n/--dist: gates and benchmarks run serially against one cluster; "
                                "xdist is only for tests_selftest/ (drop -n)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the gate marker; for a gate run build the config, run folder and ledger."""
    if not any(line.startswith("gate(") or line.startswith("gate:") for line in config.getini("markers")):
        config.addinivalue_line("markers", GATE_MARKER)
    if hasattr(config, "workerinput") or not _is_gate_run(config):
        return
    _refuse_xdist(config)
    try:
        env_file = _env_file(config)
        cfg = load_config(cli_values(config), env_file=env_file, sandbox=bool(config.getoption("modeldrop_sandbox")))
        warning = profiles.status_gate(cfg.profile, cfg.model_id, allow_blocked=cfg.allow_blocked_model)
    except InputError as e:
        raise pytest.UsageError(str(e)) from None
    try:
        gs = _start_session(config, cfg, env_file)
    except OSError as e:  # e.g. a report dir that is a file or cannot be created
        where = cfg.sources.get("RUN_REPORT_DIR", "RUN_REPORT_DIR")
        raise pytest.UsageError(f"{where} (RUN_REPORT_DIR): cannot create a run folder under {cfg.report_dir}: "
                                f"{e.strerror or e}") from None
    config.stash[SESSION_KEY] = gs
    config.pluginmanager.register(_RunHooks(config, gs), "modeldrop-run")
    _setup_html(config, gs)
    if warning:
        gs.ledger.warning(warning)
        config.issue_config_time_warning(pytest.PytestWarning(warning), stacklevel=2)


def _start_session(config: pytest.Config, cfg: RunConfig, env_file: Path | None) -> GateSession:
    """Create the run folder, pass cache and ledger, and write the first ledger records."""
    reports = _abs(config, cfg.report_dir)
    if config.option.collectonly:  # a look at the gates is not a run: keep reports/ and latest untouched
        reports = Path(tempfile.mkdtemp(prefix="modeldrop-collect-"))
    folder = RunFolder.create(reports, cfg.model_folder)
    pointer = os.environ.get(RUN_FOLDER_FILE_ENV)
    if pointer:
        Path(pointer).write_text(str(folder.path) + "\n", encoding="utf-8")
    order = gatelist.gate_order(len(cfg.nodes), audit=bool(cfg.audit))
    secrets = [str(cfg.values.get("HF_TOKEN") or "")]
    base = _rerun_argv(config, cfg, env_file, bench=False)
    state = RunState(
        run_id=folder.run_id, started=time.time(), model_id=cfg.model_id,
        nodes=[n.target for n in cfg.nodes], model_dirs=[n.model_dir for n in cfg.nodes],
        command=["pytest", *config.invocation_params.args], base_argv=base,
        bench_argv=_rerun_argv(config, cfg, env_file, bench=True), order=order,
        gates={g: GateRecord(g) for g in order}, audit=bool(cfg.audit),
        pass_cache=str(folder.report_dir / "pass_cache.json"))
    ledger = Ledger(folder, state, secrets)
    ledger.begin(options={k: v for k, v in cfg.redacted().items() if k != "nodes"},
                 env_file=str(env_file) if env_file else None, sources=cfg.sources)
    return GateSession(cfg=cfg, folder=folder, ledger=ledger, cache=PassCache(folder.report_dir / "pass_cache.json"),
                       order=order, secrets=secrets)


def _abs(config: pytest.Config, p: Path) -> Path:
    return p if p.is_absolute() else config.invocation_params.dir / p


# ---------------------------------------------------------------------------------------------
# printed commands
# ---------------------------------------------------------------------------------------------
def _pytest_prog() -> list[str]:
    """`pytest` when the pytest on PATH is this interpreter's, else `<python> -m pytest`."""
    found = shutil.which("pytest")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return ["pytest"]
    return [sys.executable, "-m", "pytest"]


def _suite_dir(config: pytest.Config, name: str) -> str:
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


def _rerun_argv(config: pytest.Config, cfg: RunConfig, env_file: Path | None, bench: bool) -> list[str]:
    """The command that reruns this run's gates (or its benchmarks) with the options that matter."""
    argv = [*_pytest_prog(), _suite_dir(config, "benchmarks" if bench else "gates"), "--model", cfg.model_id]
    given = cli_values(config)
    for key, value in given.items():
        if value in (None, False) or key == "MODEL_ID" or key in (_NOT_BENCH if bench else _NOT_RERUN):
            continue
        flag = OPTION_BY_KEY[key].flag
        argv += [flag] if value is True else [flag, str(value)]
    if config.getoption("modeldrop_sandbox"):
        argv.append("--sandbox")
        for dest, flag in (("modeldrop_sandbox_nodes", "--sandbox-nodes"),
                           ("modeldrop_sandbox_generation", "--sandbox-generation")):
            if config.getoption(dest):
                argv += [flag, str(config.getoption(dest))]
    elif config.getoption("modeldrop_env_file") and env_file is not None:
        argv += ["--env-file", config.getoption("modeldrop_env_file")]
    if bench:  # the --bench-* shape decides the case ids a printed `-k` names (fixtures/bench.py)
        argv += _bench_args(list(config.invocation_params.args))
    return argv


def _bench_args(args: list[str]) -> list[str]:
    """The `--bench-*` options (each takes a value) as given on the command line."""
    out: list[str] = []
    for i, a in enumerate(args):
        if a.startswith("--bench-") and "=" in a:
            out.append(a)
        elif a.startswith("--bench-") and i + 1 < len(args):
            out += [a, args[i + 1]]
    return out


# ---------------------------------------------------------------------------------------------
# collection: parametrize, order, keywords, timeouts
# ---------------------------------------------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize per-node gates with k = per_node_from..N (ids node2, node3, …)."""
    m = metafunc.definition.get_closest_marker("gate")
    if m is None or m.kwargs.get("per_node_from") is None or "k" not in metafunc.fixturenames:
        return
    cfg = run_config_of(metafunc.config)
    n = len(cfg.nodes) if cfg else 0
    ks = list(range(int(m.kwargs["per_node_from"]), n + 1))
    metafunc.parametrize("k", ks, ids=[f"node{k}" for k in ks])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before -k: gate ids become keywords and user properties; inactive gates are deselected."""
    for item in items:
        gate = gate_id(item)
        if gate:
            item.extra_keyword_matches.add(gate)
            item.user_properties.append(("gate", gate))
        elif item.get_closest_marker("bench") is not None:
            item.user_properties.append(("bench", item.name))
    gs = session_of(config)
    has_gates = [it for it in items if it.get_closest_marker("gate")]
    if gs is None:
        if has_gates and not hasattr(config, "workerinput"):
            raise pytest.UsageError("gate tests run as `pytest gates/ --model org/name` "
                                    "(self-tests: `pytest tests_selftest/`)")
        return
    active = set(gs.order)
    dropped = [it for it in has_gates if gate_id(it) not in active]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        keep = set(map(id, dropped))
        items[:] = [it for it in items if id(it) not in keep]
    gs.ledger.state.k_exprs = _k_expressions([it for it in items if gate_id(it)])


def _k_expressions(items: list[pytest.Item]) -> dict[str, str]:
    """For each gate, a `-k` expression selecting exactly its items (the id, plus `and not …` if needed)."""
    try:
        from _pytest.mark import KeywordMatcher
        from _pytest.mark.expression import Expression
    except ImportError:
        return {}
    gates = {gate_id(it) for it in items}
    out: dict[str, str] = {}
    for gate in gates:
        expr = gate
        for _ in range(len(gates)):
            compiled = Expression.compile(expr)
            intruders = sorted({gate_id(it) for it in items
                                if gate_id(it) != gate and compiled.evaluate(KeywordMatcher.from_item(it))})
            if not intruders:
                break
            expr += "".join(f" and not {g}" for g in intruders if f"not {g}" not in expr)
        out[gate] = expr
    return out


def _order_selected(gs: GateSession, items: list[pytest.Item]) -> None:
    """Sort by the gate order, count selected items per gate, add default timeouts."""
    index = {g: i for i, g in enumerate(gs.order)}

    def key(pair: tuple[int, pytest.Item]) -> tuple[int, int, int]:
        i, item = pair
        g = gate_id(item)
        return (0, index[g], i) if g in index else (1, 0, i)

    items[:] = [it for _, it in sorted(enumerate(items), key=key)]
    gs.selected = {}
    for item in items:
        g = gate_id(item)
        if g is None:
            continue
        gs.selected[g] = gs.selected.get(g, 0) + 1
        if item.get_closest_marker("timeout") is None:
            kind = g.split("_", 1)[1] if g.startswith("node") and "_" in g else g
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUTS_S.get(kind, 900)))
    for g in gs.order:
        if g not in gs.selected:
            gs.ledger.state.gates[g].outcome = "deselected"
    gs.ledger.state.bench_only = not gs.selected and any(it.get_closest_marker("bench") for it in items)
    gs.ledger.write_handoff()


# ---------------------------------------------------------------------------------------------
# pass reuse
# ---------------------------------------------------------------------------------------------
def _age(seconds: float) -> str:
    """`45s`, `12m`, `30h`, `3d` (rounded) for ages and --pass-max-age."""
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 2 * 3600:
        return f"{s / 60:.0f}m"
    if s < 2 * 86400:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def _fingerprint(gs: GateSession, config: pytest.Config, gate: str) -> tuple[dict, str]:
    """Parts and digest of `gate`'s fingerprint now (may probe nodes through the facts)."""
    parts = fingerprint_parts(gate, gs.cfg, facts_of(config))
    gs.parts[gate] = parts
    return parts, digest(parts)


def reusable(gs: GateSession, config: pytest.Config, gate: str) -> tuple[PassRecord | None, str]:
    """A fresh matching pass of `gate`, or None and why not (stale / changed / never passed)."""
    try:
        parts, fp = _fingerprint(gs, config, gate)
    except Exception as e:  # noqa: BLE001 - an unreachable node means "not reusable", said plainly
        return None, f"cannot compute its fingerprint ({type(e).__name__}: {one_line(e, 160)})"
    max_age = float(gs.cfg.pass_max_age)
    rec = gs.cache.lookup(gate, fp, max_age)
    if rec is not None:
        return rec, ""
    match = gs.cache.matching(gate, fp)
    if match is not None:
        return None, (f"its last pass ({_when(match.time)}, run {match.run_id}) is older than "
                      f"--pass-max-age {_age(max_age)} (recorded {_age(match.age_s())} ago)")
    latest = gs.cache.latest(gate, gs.cfg.model_id)
    if latest is not None:
        return None, f"its last pass ({_when(latest.time)}, run {latest.run_id}) was {explain_change(latest.parts, parts)}"
    return None, "never passed for this fingerprint"


def _upstream_verdict(gs: GateSession, config: pytest.Config, gate: str) -> tuple[str, str, tuple] | None:
    """None when `gate` may run; else (kind, skip reason, root) with kind blocked/missing."""
    up = gatelist.upstream_of(gate, gs.order)
    chain: list[str] = []
    while up is not None and up not in gs.selected and up not in gs.outcome:
        chain.append(up)
        up = gatelist.upstream_of(up, gs.order)
    if up is not None and gs.outcome.get(up) in ("failed", "skipped"):
        root = gs.root.get(up, (up, gs.outcome[up], ""))
        return "blocked", f"blocked by {root[0]} ({root[1]}): {root[2]}", root
    if up is not None and up not in gs.outcome:
        reason = f"blocked by {up} (not run): it did not finish before {gate}"
        return "blocked", reason, (up, "not run", "it did not finish")
    for g in reversed(chain):
        rec, why = reusable(gs, config, g)
        if rec is None:
            reason = f"no reusable pass for {g}: {why}"
            return "missing", reason, (gate, "skipped", reason)
        gs.outcome[g] = "reused"
        gs.ledger.gate_reused(g, rec.time, rec.run_id, rec.summary)
    return None


# ---------------------------------------------------------------------------------------------
# run-time hooks (registered for gate runs only)
# ---------------------------------------------------------------------------------------------
_SEVERITY = {"passed": 0, "reused": 0, "skipped": 1, "failed": 2}


def _skip_here(reason: str) -> None:
    """Skip the current item, reported at the test's own location (as skip marks are), not this file's."""
    try:
        raise pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # a pytest without the keyword
        pytest.skip(reason)


def _is_subtest(report: Any) -> bool:
    return type(report).__name__ == "SubtestReport"


def _reason(report: pytest.TestReport) -> str:
    """First line of why a report failed or skipped, without `Skipped:`/`Failed:`/`AssertionError:`."""
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        text = str(lr[2])
    else:
        crash = getattr(lr, "reprcrash", None)
        text = crash.message if crash is not None else str(lr or "")
    line = one_line(text, 400)
    return re.sub(r"^(Skipped|Failed|AssertionError|_pytest\.outcomes\.\w+):\s*", "", line)


class _RunHooks:
    """Gate ordering, skip-with-reason, outcome recording and the ledger for one gate run."""

    def __init__(self, config: pytest.Config, gs: GateSession):
        self.config = config
        self.gs = gs
        self.items_left: dict[str, int] = {}
        self.item_worst: dict[str, tuple[str, str]] = {}
        self.skip_kind: dict[str, str] = {}
        self.gate_items: dict[str, list[tuple[str, str, str]]] = {}
        self.started: set[str] = set()
        self.t0: dict[str, float] = {}
        self.interrupted = ""

    # -- collection --------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """After -k: sort by the gate order, count selected items, add default timeouts."""
        _order_selected(self.gs, items)
        self.items_left = dict(self.gs.selected)

    # -- setup: block, reuse -----------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Skip a gate (before its fixtures) when blocked, missing a reusable upstream, or reused."""
        gate = gate_id(item)
        if gate is None:
            self._gate_benchmark(item)
            return
        gs = self.gs
        if gate not in self.started:
            self.started.add(gate)
            self.t0[gate] = time.time()
            gs.ledger.gate_start(gate, self.t0[gate])
            self._refresh_html(regenerate=True)
        verdict = _upstream_verdict(gs, self.config, gate)
        if verdict is not None:
            kind, reason, root = verdict
            self.skip_kind[item.nodeid] = kind
            gs.root[gate] = root
            _skip_here(reason)
        if gs.outcome.get(gate) == "reused":  # another item of a gate already reused
            self.skip_kind[item.nodeid] = "reused"
            _skip_here(gs.ledger.state.gates[gate].reason)
        if gs.cfg.resume_bootstrap and not gs.resume_broken and gate not in gs.outcome:
            rec, why = reusable(gs, self.config, gate)
            if rec is not None:
                self.skip_kind[item.nodeid] = "reused"
                gs.outcome[gate] = "reused"
                gs.ledger.gate_reused(gate, rec.time, rec.run_id, rec.summary)
                _skip_here(f"reused pass from {_when(rec.time)} (run {rec.run_id})")
            gs.resume_broken = True
            gs.ledger.jsonl.append("resume_from", gate=gate, why=why)

    def _gate_benchmark(self, item: pytest.Item) -> None:
        """Benchmarks do not run after a gate of this session failed or was skipped."""
        if item.get_closest_marker("bench") is None:
            return
        bad = next((g for g in self.gs.order if self.gs.outcome.get(g) in ("failed", "skipped")), None)
        if bad is not None:
            root = self.gs.root.get(bad, (bad, self.gs.outcome[bad], ""))
            _skip_here(f"blocked by {root[0]} ({root[1]}): {root[2]}")

    # -- evidence on every phase ---------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        report = yield
        ev = item.stash.get(EVIDENCE_KEY, None)
        if ev is not None:
            extras = ev.drain()
            if extras:
                report.extras = list(getattr(report, "extras", [])) + extras
        return report

    # -- outcomes ------------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Record item outcomes (after subtests have adjusted the parent); finish a gate on its last item."""
        if _is_subtest(report):
            return
        props = dict(report.user_properties)
        gate, bench = props.get("gate"), props.get("bench")
        if (gate is None or gate not in self.gs.ledger.state.gates) and bench is None:
            return
        worst = self.item_worst.get(report.nodeid, ("passed", ""))
        if report.outcome in ("failed", "skipped") and _SEVERITY[report.outcome] > _SEVERITY[worst[0]]:
            self.item_worst[report.nodeid] = (report.outcome, _reason(report))
        if report.when == "setup":
            self.t0.setdefault(report.nodeid, report.start)
        if report.when != "teardown":
            return
        outcome, reason = self.item_worst.get(report.nodeid, ("passed", ""))
        if gate is None:
            self.gs.ledger.bench_result(bench, outcome, reason, report.stop - self.t0.get(report.nodeid, report.stop))
            self._refresh_html()
            return
        kind = self.skip_kind.get(report.nodeid, "self" if outcome == "skipped" else "")
        self.gate_items.setdefault(gate, []).append((outcome, reason, kind))
        self.items_left[gate] = self.items_left.get(gate, 1) - 1
        if self.items_left[gate] <= 0:
            self._finish_gate(gate, report.stop)

    def _finish_gate(self, gate: str, stop: float) -> None:
        """Combine the gate's items (worst wins), record it, and cache a pass at once."""
        gs = self.gs
        results = self.gate_items.get(gate, [])
        if results and all(kind == "reused" for _, _, kind in results):
            self._refresh_html()
            return
        outcome, reason, kind = max(results, key=lambda r: _SEVERITY[r[0]]) if results else ("passed", "", "")
        duration = stop - self.t0.get(gate, stop)
        gs.outcome[gate] = outcome
        if outcome == "failed" or (outcome == "skipped" and kind == "self"):
            gs.root[gate] = (gate, outcome, reason)
        gs.ledger.gate_result(gate, outcome, reason, duration, missing_pass=(kind == "missing"))
        if outcome == "passed":
            self._record_pass(gate)
        self._refresh_html()

    def _record_pass(self, gate: str) -> None:
        """Store the pass with its fingerprint and the gate's notes (for reuse and the profile)."""
        gs = self.gs
        rec = gs.ledger.state.gates[gate]
        try:
            parts, fp = _fingerprint(gs, self.config, gate)
            gs.cache.record(gate, fp, gs.folder.run_id, {"notes": rec.notes, "evidence": rec.evidence}, parts)
            gs.ledger.jsonl.append("pass_cached", gate=gate, fingerprint=fp)
        except Exception as e:  # noqa: BLE001 - a pass that cannot be cached is still a pass
            gs.ledger.warning(f"could not cache the pass of {gate}: {type(e).__name__}: {one_line(e, 160)}", gate)
        self._update_metadata()

    # -- session -------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Environment table (pytest-metadata) and the live HTML hooks."""
        self._update_metadata()
        self.gs.html_report = _find_html_report(self.config)
        if self.gs.html_report is not None and hasattr(self.gs.html_report, "_write_report"):
            self.gs.html_report._write_report = lhtml.atomic_writer(
                Path(self.gs.html_report._report_path), self.gs.secrets)
        self._refresh_html()

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        self.interrupted = "interrupted (Ctrl-C)"

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Profile update on a green bootstrap, the last ledger records, close the nodes."""
        gs = self.gs
        running = [r for r in gs.ledger.state.in_order() if r.outcome == "running"]
        interrupted = self.interrupted or (f"session ended while {running[0].gate} was running" if running else "")
        if green(gs.ledger.state) and not gs.cfg.audit:
            self._profile_update()
        gs.ledger.end(int(exitstatus), interrupted)
        self._update_metadata()
        self._refresh_html()
        if gs.pool is not None:
            try:
                gs.pool.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Where the run folder is and what to run next."""
        f = self.gs.ledger.fields()
        terminalreporter.write_sep("-", "modeldrop")
        terminalreporter.write_line(f"run folder: {self.gs.folder.path}")
        terminalreporter.write_line(f"handoff:    {self.gs.folder.path / 'handoff.md'}")
        for key in ("LAST_PASS_PHASE", "KNOWN_BLOCKER", "NEXT_COMMAND"):
            terminalreporter.write_line(f"{key}={f[key]}")

    # -- helpers -------------------------------------------------------------------------------
    def _profile_update(self) -> None:
        """After a fully green bootstrap: create/update the model's profile row; diff into the ledger."""
        gs = self.gs
        try:
            updates = profile_row_updates(gs)
            diff = profiles.record_bootstrap(gs.cfg.profile_path, gs.cfg.model_id, updates)
            if diff:
                gs.ledger.profile_update(str(gs.cfg.profile_path), diff)
        except Exception as e:  # noqa: BLE001 - the bootstrap stays green; the ledger says why
            gs.ledger.warning(f"profile not updated: {type(e).__name__}: {one_line(e, 200)}")

    def _update_metadata(self) -> None:
        """Model, hub commit, nodes, exo versions, dirs, options in pytest-metadata's table."""
        try:
            from pytest_metadata.plugin import metadata_key
        except ImportError:
            return
        md = self.config.stash.get(metadata_key, None)
        if md is None:
            return
        md.update(environment_table(self.gs))

    def _refresh_html(self, regenerate: bool = False) -> None:
        """Put the current hand-off block at the top of the HTML ledger; `regenerate` rewrites it now
        (at a gate's start, so a run killed inside the gate leaves a ledger.html that names it)."""
        rep = self.gs.html_report
        data = getattr(rep, "_report", None)
        if data is None:
            return
        try:
            _set_prefix(data.additional_summary["prefix"], self.gs)
            if regenerate and self.config.getini("generate_report_on_test"):
                rep._generate_report()
        except (AttributeError, KeyError, TypeError, ValueError):
            pass


def _set_prefix(prefix: list[str], gs: GateSession) -> None:
    prefix[:] = [p for p in prefix if 'class="modeldrop-handoff"' not in p]
    prefix.insert(0, lhtml.summary_html(gs.ledger.fields(), gs.ledger.state))


def _find_html_report(config: pytest.Config) -> Any:
    """pytest-html's report object (the one that writes ledger.html), if any."""
    for plugin in config.pluginmanager.get_plugins():
        if hasattr(plugin, "_report_path") and hasattr(plugin, "_generate_report"):
            return plugin
    return None


class _HtmlHooks:
    """pytest-html hooks, registered only when pytest-html is active."""

    def __init__(self, gs: GateSession):
        self.gs = gs

    def pytest_html_report_title(self, report: Any) -> None:
        report.title = f"modeldrop ledger: {self.gs.cfg.model_id} ({self.gs.folder.run_id})"

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(1, lhtml.gate_header())
        cells.insert(2, lhtml.started_header())

    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        gate = dict(getattr(report, "user_properties", [])).get("gate")
        if gate and report.skipped and _reason(report).startswith("reused pass from"):
            gate = f"{gate} (reused)"
        cells.insert(1, lhtml.gate_cell(gate))
        cells.insert(2, lhtml.started_cell(getattr(report, "start", None)))

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str],
                                    session: pytest.Session) -> None:
        _set_prefix(prefix, self.gs)


def _setup_html(config: pytest.Config, gs: GateSession) -> None:
    """ledger.html in the run folder (unless --html was given), self-contained, rewritten per test."""
    if not config.pluginmanager.hasplugin("html") or not hasattr(config.option, "htmlpath"):
        return
    if not config.option.htmlpath:
        config.option.htmlpath = str(gs.folder.path / "ledger.html")
        config.option.self_contained_html = True
        css = gs.folder.write_text("ledger.css", lhtml.LEDGER_CSS)
        config.option.css = [*(getattr(config.option, "css", None) or []), str(css)]
    try:
        if not config.getini("generate_report_on_test"):
            config._inicache["generate_report_on_test"] = True  # a killed run still leaves a ledger
    except (ValueError, AttributeError):
        pass
    config.pluginmanager.register(_HtmlHooks(gs), "modeldrop-html")


def environment_table(gs: GateSession) -> dict[str, Any]:
    """The environment rows of ledger.html (secrets redacted)."""
    cfg = gs.cfg
    hub = next((p.get("hub_commit") for p in gs.parts.values() if p.get("hub_commit")), None)
    exo: dict[str, Any] = {}
    for p in gs.parts.values():
        exo.update({k: v for k, v in (p.get("exo_versions") or {}).items() if v})
    return {
        "modeldrop run": gs.folder.run_id,
        "Model": cfg.model_id,
        "Hub commit": hub or "unknown yet",
        "Nodes": {n.name: n.target for n in cfg.nodes},
        "Model dirs": {n.name: n.model_dir for n in cfg.nodes},
        "exo version": exo or "unknown yet",
        "Env file": str(cfg.env_file) if cfg.env_file else "none",
        "Options": {k: v for k, v in cfg.redacted().items() if k != "nodes" and v not in (None, "")},
    }


def profile_row_updates(gs: GateSession) -> dict[str, Any]:
    """The profile row fields a green bootstrap measured (from the gates' notes, this run or reused)."""
    notes: dict[str, Any] = {}
    for rec in gs.ledger.state.in_order():
        notes.update(rec.notes)
    row: dict[str, Any] = {}
    if gs.cfg.include:
        row["include"] = list(gs.cfg.include)
    for note_key, field_name in (("safetensors_count", "expected_safetensors"), ("gguf_count", "expected_gguf"),
                                 ("total_size_bytes", "total_size_bytes")):
        if isinstance(notes.get(note_key), int) and not isinstance(notes.get(note_key), bool):
            row[field_name] = notes[note_key]
    if notes.get("instance_id"):
        row["instance_id"] = str(notes["instance_id"])
    if "total_size_bytes" in row:
        row["disk_threshold_gb"] = round((row["total_size_bytes"] * 1.10 + 1e9) / 1e9, 1)
    hub = next((p.get("hub_commit") for p in gs.parts.values() if p.get("hub_commit")), None)
    if hub and re.fullmatch(r"[0-9a-f]{40}", str(hub)):
        row["hub_commit"] = hub
    for key, value in (("sharding", config_value(gs, "EXO_SHARDING")), ("instance_meta", config_value(gs, "EXO_INSTANCE_META"))):
        if value:
            row[key] = value
    if not (gs.cfg.profile or {}).get("notes"):  # never overwrite an operator's notes
        row["notes"] = (f"first green bootstrap {gs.folder.run_id} on {len(gs.cfg.nodes)} node(s), "
                        f"{dur(time.time() - gs.ledger.state.started)}")
    row["status"] = "active"
    return row


def config_value(gs: GateSession, key: str) -> Any:
    """A resolved config value (None when unset)."""
    return effective(gs.cfg, key, None)


__all__ = ["SESSION_KEY", "FACTS_KEY", "POOL_KEY", "GateSession", "gate_id", "evidence_for", "run_config_of",
           "run_folder_of", "ledger_of", "pass_cache_of", "node_pool_of", "facts_of", "reusable"]

"""model-drop and model-drop-latest: the operator's commands, thin wrappers around the suite's pytest runs.

Contract:
- `model-drop org/model [--bench] [pytest args…]` validates the model id first (one `ERROR:` line, exit 4,
  nothing run), then runs `python -m pytest <suite>/gates --model org/model …` with the suite this modeldrop
  carries (`statedirs.suite_root`: its own checkout, else the copy the wheel installed) from the current
  directory (a checkout's root when run inside that checkout), and returns pytest's exit status. pytest prints
  the run's summary and hand-off; model-drop prints `RING_INPUT_READY` as the last line only when an audit run
  (`--audit`, or AUDIT=1 in the environment or env file) exited 0 with every gate of its order passed or reused.
- `--bench`: after a green bootstrap, the benchmarks in the same invocation, with the same options less the gate
  selection (`bench_args`); the exit status is then theirs.
- `-h/--help` anywhere prints model-drop's own options and the command that lists pytest's; `--version` prints
  the version and where this modeldrop and its suite are; `--suite-dir` the suite's directory (plain pytest over
  the installed gates: `pytest "$(model-drop --suite-dir)/gates" …`). None runs anything. `--collect-only` runs
  pytest and adds nothing.
- `--profiles` prints the model profiles as the guide's table (`profile_table.render`): the rows a run would read
  (PROFILE_PATH from --profile-path, the environment or the env file, else this user's; the checkout's tracked
  table for a model only it has). A bad file is one `ERROR:` line, exit 4.
- Run inside a modeldrop checkout other than its own, it says in one line which one runs (its own).
- `model-drop-latest [args…]`: the same with the last run's model id: `<report dir>/latest` when a report dir is
  given (--report-dir, RUN_REPORT_DIR, the env file), else this user's last run wherever it went
  (`statedirs.last_run`, the sandbox demo's included), else the default report dir's; and that run's env file
  when the command line names none.
- Plain Python: the pytest run is a subprocess (`python -P`: the current directory is not on its import path);
  the plugin tells it the run folder through the file named by MODELDROP_RUN_FOLDER_FILE.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

from modeldrop import __version__, profile_table, profiles, statedirs, validate
from modeldrop.config import DEFAULT_ENV_FILE, OPTION_BY_KEY, read_env_file
from modeldrop.errors import InputError
from modeldrop.ledger import runjson
from modeldrop.ledger.jsonl import read_jsonl
from modeldrop.ledger.runfolder import RUN_FOLDER_FILE_ENV, resolve_latest
from modeldrop.plugin.commands import NOT_BENCH

EXIT_USAGE = 4
OWN_FLAGS = {"-h": "help", "--help": "help", "--version": "version", "--bench": "bench", "--suite-dir": "suite-dir",
             "--profiles": "profiles"}
# Options of the gate run the help lists (all of them: the pytest help command it prints).
COMMON_KEYS = ("FAST", "RESUME_BOOTSTRAP", "ONLINE", "AUDIT", "NODES", "RUN_REPORT_DIR", "PROFILE_PATH",
               "UPDATE_PROFILE", "TEARDOWN", "PARALLEL_DOWNLOADS")
# Gate selection a `--bench` run leaves out, beside the options the plugin's benchmark command leaves out.
SELECTION_WITH_VALUE = ("-k", "-m", "--deselect")
SELECTION_FLAGS = ("--lf", "--last-failed", "--ff", "--failed-first", "--sw", "--stepwise", "--collect-only", "--co")


def _error(msg: str) -> int:
    print(f"ERROR: {msg}", file=sys.stderr)
    return EXIT_USAGE


def split_own(args: Sequence[str]) -> tuple[set[str], list[str]]:
    """(model-drop's own flags given, the other args in order); nothing after `--` is model-drop's."""
    own: set[str] = set()
    rest: list[str] = []
    for i, a in enumerate(args):
        if a == "--":
            rest += args[i:]
            break
        if a in OWN_FLAGS:
            own.add(OWN_FLAGS[a])
        else:
            rest.append(a)
    return own, rest


def pytest_help_command(suite: Path) -> str:
    """The command that prints pytest's help with every modeldrop option (pytest reads the suite's options from its
    conftest.py, so the gates are named by their path)."""
    on_path = shutil.which("pytest")
    same = on_path is not None and Path(on_path).parent == Path(sys.executable).parent
    prog = "pytest" if same else f"{sys.executable} -m pytest"
    if statedirs.is_installed_suite(suite):
        return f"{prog} {suite / 'gates'} --help"
    return f"cd {suite} && {prog} gates/ --help"


def parser(prog: str) -> argparse.ArgumentParser:
    """model-drop's (or model-drop-latest's) own options, for --help."""
    latest = prog.endswith("latest")
    usage = f"{prog} [--bench] [pytest args…]" if latest else f"{prog} org/model [--bench] [pytest args…]"
    what = ("the last run's model id again (its env file too unless --env-file is given)" if latest else
            "the gates of the bootstrap, in order, for model org/model")
    p = argparse.ArgumentParser(prog=prog, usage=usage, add_help=False, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=f"Run {what}; pytest prints the summary and the hand-off.")
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    p.add_argument("--version", action="store_true", help="show the version and where modeldrop and its suite are")
    p.add_argument("--bench", action="store_true",
                   help="after a green bootstrap, run the benchmarks in the same invocation (their exit status)")
    p.add_argument("--suite-dir", action="store_true",
                   help="print the directory of the gates/ and benchmarks/ it runs (for plain pytest: "
                        'pytest "$(model-drop --suite-dir)/gates" --model org/model …)')
    p.add_argument("--profiles", action="store_true",
                   help="print the model profiles as the guide's table (PROFILE_PATH, else this user's)")
    return p


def help_text(prog: str) -> str:
    """--help: own options, then the common gate-run options (passed on to pytest) and where the rest are."""
    lines = [parser(prog).format_help().rstrip(), "", "common options, passed on to pytest:"]
    for key in COMMON_KEYS:
        opt = OPTION_BY_KEY.get(key)
        if opt is None or not opt.flag:
            continue
        flag = opt.flag if opt.kind == "bool" else f"{opt.flag} {opt.key}"
        lines += textwrap.wrap(opt.help.replace("%%", "%"), 100, initial_indent=f"  {flag:<30}",
                               subsequent_indent=" " * 32)
    lines += [f"  {'--env-file PATH':<30}settings file (default {DEFAULT_ENV_FILE} when it exists)",
              f"  {'-k EXPR':<30}rerun one gate, e.g. -k transport", ""]
    try:
        suite = statedirs.suite_root()
        lines += ["every other option, and pytest's own:", f"  {pytest_help_command(suite)}", "", where_lines(suite)]
    except InputError as e:
        lines += [f"suite: {e}"]
    lines += [f"run folders: reports/ in a checkout, else {statedirs.data_dir() / 'reports'}, or RUN_REPORT_DIR",
              f"profiles:    PROFILE_PATH, else {statedirs.config_dir() / statedirs.PROFILES_FILE}"]
    return "\n".join(lines)


def where_lines(suite: Path) -> str:
    """Which modeldrop runs and which suite."""
    kind = "installed" if statedirs.is_installed_suite(suite) else "checkout"
    return f"modeldrop:   {statedirs.PACKAGE_DIR} ({__version__})\nsuite:       {suite} ({kind})"


def checkout_version(root: Path) -> str:
    """The `__version__` a checkout's modeldrop/__init__.py declares, or `?`."""
    try:
        m = re.search(r'__version__\s*=\s*"([^"]+)"', (root / "modeldrop" / "__init__.py").read_text())
    except OSError:
        return "?"
    return m.group(1) if m else "?"


def other_checkout(suite: Path, cwd: Path | None = None) -> Path | None:
    """A modeldrop checkout around the current directory that is not the one this modeldrop runs."""
    cwd = (cwd or Path.cwd()).resolve()
    for d in (cwd, *cwd.parents):
        if statedirs.is_checkout(d):
            return None if d == suite.resolve() else d
    return None


def other_pytest(checkout: Path) -> str:
    """How to run pytest in another checkout: its own .venv when it has one, else `python -m pytest` (after
    installing it: `./install.sh` in a checkout)."""
    return ".venv/bin/pytest" if (checkout / ".venv" / "bin" / "pytest").exists() else "python3 -m pytest"


def run_dir(suite: Path) -> Path:
    """Where pytest runs: the checkout's root when run inside the suite's own checkout, else the current dir."""
    cwd = Path.cwd().resolve()
    if not statedirs.is_installed_suite(suite) and (cwd == suite or suite in cwd.parents):
        return suite
    return cwd


def _run_pytest(suite: Path, which: str, model: str, rest: Sequence[str]) -> tuple[int, Path | None]:
    """Run `python -P -m pytest <suite>/<which> --model model rest…`; returns (exit status, run folder)."""
    here = run_dir(suite)
    target = f"{which}/" if here == suite else str(suite / which)
    fd, pointer = tempfile.mkstemp(prefix="modeldrop-run-", suffix=".txt")
    os.close(fd)
    env = {**os.environ, RUN_FOLDER_FILE_ENV: pointer}
    if statedirs.is_installed_suite(suite):
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written inside the installed package
    cmd = [sys.executable, "-P", "-m", "pytest", target, "--model", model, *rest]
    try:
        proc = subprocess.Popen(cmd, cwd=here, env=env)
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:  # pytest got the SIGINT too; let it finish its ledger
                continue
        text = Path(pointer).read_text(encoding="utf-8").strip()
        folder = Path(text) if text else None
    finally:
        Path(pointer).unlink(missing_ok=True)
    return rc, folder


def audit_ready(folder: Path) -> bool:
    """Every gate of the run's audit order passed or was reused (from run.json)."""
    return runjson.audit_ready(runjson.read(folder))


def bench_args(rest: Sequence[str]) -> list[str]:
    """The gate run's args for its benchmarks: no gate selection (-k, -m, --lf, …) and none of the options the
    plugin's own benchmark command leaves out (plugin.commands.NOT_BENCH)."""
    drop_flags = set(SELECTION_FLAGS) | {OPTION_BY_KEY[k].flag for k in NOT_BENCH if OPTION_BY_KEY[k].flag}
    out: list[str] = []
    skip = False
    for a in rest:
        if skip:
            skip = False
        elif a in SELECTION_WITH_VALUE:
            skip = True
        elif a in drop_flags or a.startswith(tuple(f"{f}=" for f in (*SELECTION_WITH_VALUE, *drop_flags))):
            continue
        elif any(a.startswith(f) and len(a) > 2 for f in ("-k", "-m")):  # -kEXPR
            continue
        else:
            out.append(a)
    return out


def run(model: str, rest: Sequence[str], *, bench: bool = False) -> int:
    """Validate, run the gates (then the benchmarks with `bench`), say RING_INPUT_READY; returns the exit status."""
    try:
        model = validate.model_id(model, "model-drop")
        suite = statedirs.suite_root()
    except InputError as e:
        return _error(str(e))
    if bench and "--audit" in rest:
        return _error("model-drop: --bench runs the benchmarks after a bootstrap, and --audit starts no exo; drop one")
    other = other_checkout(suite)
    if other is not None:
        print(f"model-drop: running modeldrop {__version__} from {statedirs.PACKAGE_DIR} (its suite {suite}), not the "
              f"checkout at {other} (modeldrop {checkout_version(other)}); to run that one: cd {other} && "
              f"{other_pytest(other)} gates/ --model {model}", file=sys.stderr)
    rc, folder = _run_pytest(suite, "gates", model, rest)
    if any(a in ("--collect-only", "--co") for a in rest):
        return rc
    if folder is None:
        if rc not in (0, EXIT_USAGE):
            print(f"model-drop: pytest exited {rc} before a run folder was written (see above)", file=sys.stderr)
        return rc
    run_doc = runjson.read(folder)
    if rc == 0 and runjson.audit_ready(run_doc):
        print("RING_INPUT_READY")
        return rc
    if not bench:
        return rc
    if rc != 0 or not runjson.all_passed(run_doc) or (run_doc or {}).get("audit"):
        print(f"model-drop: --bench: the bootstrap is not green (exit {rc}); the benchmarks were not run",
              file=sys.stderr)
        return rc or 1
    print(f"\nmodel-drop: bootstrap green; the benchmarks next (--bench, {folder.name})", flush=True)
    return _run_pytest(suite, "benchmarks", model, bench_args(rest))[0]


def _own_flags(prog: str, args: Sequence[str]) -> tuple[int | None, set[str], list[str]]:
    """(exit status when --help or --version answered, own flags, the rest)."""
    own, rest = split_own(args)
    if "help" in own:
        print(help_text(prog))
        return 0, own, rest
    if "suite-dir" in own:
        try:
            print(statedirs.suite_root())
        except InputError as e:
            return _error(str(e)), own, rest
        return 0, own, rest
    if "profiles" in own:
        return print_profiles(rest), own, rest
    if "version" in own:
        print(f"{prog} {__version__}")
        try:
            print(where_lines(statedirs.suite_root()))
        except InputError as e:
            print(f"suite: {e}")
        return 0, own, rest
    return None, own, rest


def model_drop_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `model-drop`."""
    done, own, rest = _own_flags("model-drop", list(sys.argv[1:] if argv is None else argv))
    if done is not None:
        return done
    if not rest or rest[0].startswith("-"):
        return _error("model-drop: expected the model id first, e.g. model-drop mlx-community/Qwen3-8B-4bit --fast "
                      "(model-drop --help)")
    return run(rest[0], rest[1:], bench="bench" in own)


def _arg_value(args: Sequence[str], flag: str) -> str | None:
    """The value of `flag` in pytest args (`--flag v` or `--flag=v`), the last one winning."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a[len(flag) + 1:]
    return value


def given_setting(here: Path, args: Sequence[str], key: str) -> Path | None:
    """A path setting the operator names, resolved as a run resolves it: its flag in `args`, else `key` from the
    environment, else from the env file (`--env-file` in `args`, else config/model_drop.env when it exists);
    relative to `here`. None when none names one. A bad env file raises InputError."""
    value = _arg_value(args, OPTION_BY_KEY[key].flag or "") or os.environ.get(key)
    if not value:
        given = _arg_value(args, "--env-file")
        env_file = Path(given).expanduser() if given else DEFAULT_ENV_FILE
        env_file = env_file if env_file.is_absolute() else here / env_file
        if given or env_file.is_file():
            value = read_env_file(env_file).get(key, ("", ""))[0]
    if not value:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else here / p


def given_report_dir(here: Path, args: Sequence[str] = ()) -> Path | None:
    """The report dir the operator names (`given_setting` of RUN_REPORT_DIR), or None."""
    return given_setting(here, args, "RUN_REPORT_DIR")


def print_profiles(args: Sequence[str]) -> int:
    """`model-drop --profiles`: the rows a run would read (see the module doc) as the guide's table."""
    try:
        suite = statedirs.suite_root()
        here = run_dir(suite)
        given = given_setting(here, args, "PROFILE_PATH")
        files = statedirs.profile_files(str(given) if given else None,
                                        None if statedirs.is_installed_suite(suite) else suite)
        rows = profiles.load(files.seed)["models"] if files.seed is not None else {}
        rows = {**rows, **profiles.load(files.path)["models"]}
    except InputError as e:
        return _error(str(e))
    seed = f" (and {files.seed} for a model only it has)" if files.seed is not None else ""
    print(f"model profiles: {files.path}{seed}\n")
    print(profile_table.render({"models": rows}))
    return 0


def last_folder(here: Path, checkout: Path | None, args: Sequence[str] = ()) -> tuple[Path | None, Path]:
    """(the last run folder, where it was looked for): see the module doc."""
    given = given_report_dir(here, args)
    if given is not None:
        return resolve_latest(given), given / "latest"
    found = statedirs.last_run()
    if found is not None:
        return found, statedirs.data_dir() / statedirs.LAST_RUN_FILE
    default = statedirs.default_report_dir(checkout)
    default = default if default.is_absolute() else here / default
    return resolve_latest(default), default / "latest"


def run_model(folder: Path) -> str | None:
    """The model id of a run folder: its run.json, else the folder name."""
    run_doc = runjson.read(folder)
    if run_doc and run_doc.get("model"):
        return str(run_doc["model"])
    name = folder.name.split("-", 1)[1] if "-" in folder.name else ""
    return name.replace("--", "/", 1) or None


def run_env_file(folder: Path) -> Path | None:
    """The env file a run used (its ledger.jsonl's run_start record), when it still exists."""
    try:
        records = read_jsonl(folder / "ledger.jsonl")
    except OSError:
        return None
    start = next((r for r in records if r.get("event") == "run_start"), None)
    path = Path(start["env_file"]) if start and start.get("env_file") else None
    return path if path is not None and path.is_file() else None


def model_drop_latest_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `model-drop-latest`."""
    done, own, rest = _own_flags("model-drop-latest", list(sys.argv[1:] if argv is None else argv))
    if done is not None:
        return done
    try:
        suite = statedirs.suite_root()
        folder, where = last_folder(run_dir(suite), None if statedirs.is_installed_suite(suite) else suite, rest)
    except InputError as e:
        return _error(str(e))
    model = run_model(folder) if folder is not None else None
    if not model:
        return _error(f"model-drop-latest: no previous run under {where.parent} (no '{where.name}')")
    note = f"from {folder}"
    env_file = run_env_file(folder)
    if env_file is not None and _arg_value(rest, "--env-file") is None and "--sandbox" not in rest:
        rest = [*rest, "--env-file", str(env_file)]
        note += f", env file {env_file}"
    print(f"model-drop-latest: {model} ({note})", flush=True)
    return run(model, rest, bench="bench" in own)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(model_drop_main())

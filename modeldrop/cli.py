"""model-drop and model-drop-latest: thin wrappers around `pytest gates/` that end with the hand-off.

Contract:
- `model-drop org/model [--fast] [--resume-bootstrap] [--online] [--audit] [pytest args…]` validates the
  model id first (one `ERROR:` line, exit 4, nothing run), then runs `python -m pytest gates/ --model
  org/model …` in the project root (the directory holding gates/ and conftest.py), prints the run
  folder and the Hand-off Block (read from the run's run.json), and returns pytest's exit status.
- In an audit run (`--audit`, or AUDIT=1 in the environment or env file), the last line is
  `RING_INPUT_READY` only when pytest exited 0 and every gate of the audit order (preflight,
  nodeK_verify, parity) passed or was reused.
- `model-drop-latest [args…]` does the same with the model id of the last run (`reports/latest`).
- `model-drop --profiles [--profile-path P] [--env-file F]` prints the model profiles as the guide's table
  (`profile_table.render`) from PROFILE_PATH resolved as a run resolves it; a bad file is one `ERROR:` line.
- Plain Python: the pytest run is a subprocess; the plugin tells it the run folder through the
  file named by MODELDROP_RUN_FOLDER_FILE.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from modeldrop import profile_table, profiles, validate
from modeldrop.config import DEFAULT_ENV_FILE, read_env_file
from modeldrop.errors import InputError
from modeldrop.ledger import runjson
from modeldrop.ledger.handoff import HANDOFF_KEYS, block_lines
from modeldrop.ledger.runfolder import RUN_FOLDER_FILE_ENV, resolve_latest

USAGE = ("usage: model-drop org/model [--fast] [--resume-bootstrap] [--online] [--audit] [pytest args…]\n"
         "       model-drop --profiles [--profile-path P] [--env-file F]\n"
         "       model-drop-latest [--resume-bootstrap] [pytest args…]")
EXIT_USAGE = 4


def _error(msg: str) -> int:
    print(f"ERROR: {msg}", file=sys.stderr)
    return EXIT_USAGE


def project_root(start: Path | None = None) -> Path:
    """The directory with gates/ and conftest.py: the cwd or an ancestor, else the package's checkout."""
    start = (start or Path.cwd()).resolve()
    for d in (start, *start.parents):
        if (d / "gates").is_dir() and (d / "conftest.py").is_file():
            return d
    pkg_root = Path(__file__).resolve().parents[1]
    if (pkg_root / "gates").is_dir():
        return pkg_root
    raise InputError(f"model-drop: no gates/ and conftest.py in {start} or above; run it from the modeldrop checkout")


def _arg_value(args: Sequence[str], flag: str) -> str | None:
    """The value of `flag` in pytest args (`--flag v` or `--flag=v`), the last one winning."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a[len(flag) + 1:]
    return value


def report_dir(root: Path, args: Sequence[str] = ()) -> Path:
    """Where the plugin puts run folders, resolved as it does: `--report-dir` in `args`, else RUN_REPORT_DIR
    from the environment, else from the env file (`--env-file` in `args`, else config/model_drop.env when it
    exists), else `reports`; relative to `root`. A bad env file raises InputError."""
    return _setting_path(root, args, "--report-dir", "RUN_REPORT_DIR", "reports")


def _setting_path(root: Path, args: Sequence[str], flag: str, key: str, default: str) -> Path:
    """A path setting resolved as the plugin resolves it (flag in args, environment, env file, default), relative
    to `root`."""
    value = _arg_value(args, flag) or os.environ.get(key)
    if not value:
        given = _arg_value(args, "--env-file")
        env_file = Path(given).expanduser() if given else DEFAULT_ENV_FILE
        env_file = env_file if env_file.is_absolute() else root / env_file
        if given or env_file.is_file():
            value = read_env_file(env_file).get(key, ("", ""))[0]
    p = Path(value or default).expanduser()
    return p if p.is_absolute() else root / p


def print_profiles(args: Sequence[str], root: Path | None = None) -> int:
    """`model-drop --profiles`: the profiles file (PROFILE_PATH, resolved as a run does) as the guide's table."""
    try:
        root = root or project_root()
        path = _setting_path(root, args, "--profile-path", "PROFILE_PATH", "model_profiles.json")
        data = profiles.load(path)
    except InputError as e:
        return _error(str(e))
    print(f"model profiles: {path}\n")
    print(profile_table.render(data))
    return 0


def _run_pytest(root: Path, model: str, rest: Sequence[str]) -> tuple[int, Path | None]:
    """Run `python -m pytest gates/ --model model rest…` in `root`; returns (exit status, run folder)."""
    fd, pointer = tempfile.mkstemp(prefix="modeldrop-run-", suffix=".txt")
    os.close(fd)
    env = {**os.environ, RUN_FOLDER_FILE_ENV: pointer}
    cmd = [sys.executable, "-m", "pytest", "gates/", "--model", model, *rest]
    try:
        proc = subprocess.Popen(cmd, cwd=root, env=env)
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


def print_handoff(folder: Path | None) -> None:
    """Print the run folder and its Hand-off Block (from run.json)."""
    run = runjson.read(folder) if folder is not None else None
    if folder is None or run is None:
        print("\nmodel-drop: no run folder was written (see the errors above)")
        return
    block = run.get("handoff") or {}
    print(f"\nrun folder: {folder}")
    print(f"handoff:    {folder / 'handoff.md'}\n")
    for line in block_lines(block, tuple(k for k in HANDOFF_KEYS if k in block)):
        print(line)


def run(model: str, rest: Sequence[str], root: Path | None = None) -> int:
    """Validate, run the gates, print the hand-off; returns pytest's exit status."""
    try:
        model = validate.model_id(model, "model-drop")
        root = root or project_root()
    except InputError as e:
        return _error(str(e))
    rc, folder = _run_pytest(root, model, rest)
    if folder is None and rc not in (EXIT_USAGE,):
        try:
            folder = resolve_latest(report_dir(root, rest))
        except InputError:
            folder = None
    print_handoff(folder)
    if rc == 0 and folder is not None and audit_ready(folder):  # audit_ready: only an audit run (--audit or AUDIT=1)
        print("RING_INPUT_READY")
    return rc


def model_drop_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `model-drop`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if args and args[0] == "--profiles":
        return print_profiles(args[1:])
    if not args or args[0].startswith("-"):
        return _error("model-drop: expected the model id first, e.g. model-drop mlx-community/Qwen3-8B-4bit --fast")
    return run(args[0], args[1:])


def latest_model(root: Path, args: Sequence[str] = ()) -> str | None:
    """The model id of the last run (`<report dir>/latest`): its run.json, else the folder name."""
    folder = resolve_latest(report_dir(root, args))
    if folder is None:
        return None
    run = runjson.read(folder)
    if run and run.get("model"):
        return str(run["model"])
    name = folder.name.split("-", 1)[1] if "-" in folder.name else ""
    return name.replace("--", "/", 1) or None


def model_drop_latest_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `model-drop-latest`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        root = project_root()
        reports = report_dir(root, args)
    except InputError as e:
        return _error(str(e))
    model = latest_model(root, args)
    if not model:
        return _error(f"model-drop-latest: no previous run under {reports} (no 'latest' link)")
    print(f"model-drop-latest: {model} (from {reports / 'latest'})")
    return run(model, args, root)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(model_drop_main())

"""The operator's install path, proven against the sandbox (.ci/run runs it; a self-test runs its --quick form).

Full (CI): build the wheel from the working tree; install it (no -e, no extras) into a fresh venv at the versions of
constraints.txt; from an empty directory run `model-drop --version`, `model-drop --help`, a run with no writable data
dir (exit 4, one line), `model-drop <the sandbox model> --audit` against the sandbox's node 1 (files only; the last
line must be RING_INPUT_READY), then a whole `model-drop` bootstrap of the sandbox (the EXO emulator; see README,
"Tests"), green, with its run folder under the user's data dir, the profile row in the user's config dir, and
nothing written in the empty directory or inside the installed package; `model-drop-latest` finds that run.
--quick (self-tests): the wheel built with this venv's setuptools and installed with --no-deps into a folder on
PYTHONPATH (this venv's dependencies), and the same up to the audit, against an up sandbox (--sandbox-root); no fresh
venv, no bootstrap.

Prints every command with its output, then the figures: the operator venv's size and install time beside this
checkout's .venv, and each step's seconds. Exit 0 when every check held, 1 naming the first that did not.
Usage: .venv/bin/python .ci/operator_path.py [--slot S | --sandbox-root DIR] [--quick] [--python PY] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox.cluster import Sandbox, default_root  # noqa: E402 - this checkout's sandbox

CONFIG_KEYS = ("RUN_REPORT_DIR", "PROFILE_PATH", "MODEL_ID", "NODES", "AUDIT")  # not inherited by the runs


class Failed(Exception):
    """A check of the operator path did not hold."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise Failed(what)


class Steps:
    """Timed steps, printed as they finish."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    def timed(self, name: str, fn, *args, **kwargs):
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self.times.append((name, time.monotonic() - t0))


def run(argv: Sequence[str], *, cwd: Path, env: dict[str, str], echo: str, stream: bool = False) -> tuple[int, str]:
    """Run `argv`, print `$ echo` and its output (as it comes with `stream`); (exit status, stdout+stderr)."""
    print(f"\n$ {echo}", flush=True)
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if stream:
            print(line, end="", flush=True)
    rc = proc.wait()
    out = "".join(lines)
    if not stream:
        print(out, end="" if out.endswith("\n") or not out else "\n")
    print(f"[exit {rc}]", flush=True)
    return rc, out


def copy_tree(dest: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) copied to `dest`: a wheel built there carries no
    stale build/ of the checkout."""
    names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def build_wheel(src: Path, out: Path, isolated: bool = True) -> Path:
    """The wheel, built as pipx/uv/pip build it (isolated), or with this venv's setuptools (the quick form)."""
    isolation = [] if isolated else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-qq", "--no-deps", *isolation, "-w", str(out), str(src)],
                   check=True)
    wheels = sorted(out.glob("modeldrop-*.whl"))
    check(len(wheels) == 1, f"one modeldrop wheel in {out}, found {[w.name for w in wheels]}")
    return wheels[0]


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


class Install:
    """The installed modeldrop: how to run its two commands, its package dir, and the environment of the runs."""

    def __init__(self, work: Path, wheel: Path, python: str, quick: bool):
        self.env = {k: v for k, v in os.environ.items() if k not in CONFIG_KEYS and not k.startswith("MODELDROP_")}
        self.env.update(XDG_DATA_HOME=str(work / "user" / "data"), XDG_CONFIG_HOME=str(work / "user" / "config"))
        if quick:
            site = work / "site"
            subprocess.run([sys.executable, "-m", "pip", "install", "-qq", "--no-deps", "--target", str(site),
                            str(wheel)], check=True)
            self.env["PYTHONPATH"] = str(site)
            self.python = sys.executable
            self.model_drop = [sys.executable, "-P", "-m", "modeldrop.cli"]
            self.latest = [sys.executable, "-P", "-c", "import sys; from modeldrop.cli import "
                           "model_drop_latest_main as m; sys.exit(m())"]
            self.package = site / "modeldrop"
            self.venv = None
        else:
            self.venv = work / "venv"
            subprocess.run([python, "-m", "venv", str(self.venv)], check=True)
            subprocess.run([str(self.venv / "bin" / "python"), "-m", "pip", "install", "-qq", "-c",
                            str(REPO / "constraints.txt"), str(wheel)], check=True)
            self.python = str(self.venv / "bin" / "python")
            self.model_drop = [str(self.venv / "bin" / "model-drop")]
            self.latest = [str(self.venv / "bin" / "model-drop-latest")]
            found = list((self.venv / "lib").glob("python3*/site-packages/modeldrop"))
            check(len(found) == 1, f"modeldrop installed in {self.venv}")
            self.package = found[0]


def operator_env_file(box: Sandbox, dest: Path) -> Path:
    """The sandbox's env file as an operator's: without its RUN_REPORT_DIR and PROFILE_PATH (item 3's defaults)."""
    lines = [line for line in box.env_file.read_text().splitlines()
             if not line.startswith(("RUN_REPORT_DIR=", "PROFILE_PATH="))]
    dest.write_text("\n".join(lines) + "\n")
    return dest


def check_cli(inst: Install, empty: Path, version: str) -> None:
    rc, out = run([*inst.model_drop, "--version"], cwd=empty, env=inst.env, echo="model-drop --version")
    check(rc == 0 and out.splitlines()[0] == f"model-drop {version}", "model-drop --version names the version")
    check(f"{inst.package / 'suite'} (installed)" in out, "model-drop --version names the installed suite")
    rc, out = run([*inst.model_drop, "--help"], cwd=empty, env=inst.env, echo="model-drop --help")
    check(rc == 0 and out.startswith("usage: model-drop org/model [--bench]"), "model-drop --help is its own")
    check(f"{inst.package / 'suite' / 'gates'} --help" in out, "model-drop --help points at pytest's help")
    rc, out = run([*inst.model_drop, "--suite-dir"], cwd=empty, env=inst.env, echo="model-drop --suite-dir")
    check(rc == 0 and out.strip() == str(inst.package / "suite"), "model-drop --suite-dir is the installed suite")


def check_no_data_dir(inst: Install, empty: Path, work: Path, model: str, env_file: Path) -> None:
    blocker = work / "not-a-dir"
    blocker.write_text("")
    env = {**inst.env, "XDG_DATA_HOME": str(blocker / "data")}
    rc, out = run([*inst.model_drop, model, "--env-file", str(env_file)], cwd=empty, env=env,
                  echo=f"XDG_DATA_HOME={blocker}/data model-drop {model} --env-file {env_file}")
    errors = [line for line in out.splitlines() if line.startswith("ERROR:")]
    check(rc == 4 and len(errors) == 1 and "per-user data dir" in errors[0] and "RUN_REPORT_DIR" in errors[0],
          "no writable data dir is exit 4 with one line naming it and the fix")
    check("Traceback" not in out and "preflight" not in out, "no traceback, no gate")


def check_audit(inst: Install, empty: Path, box: Sandbox, env_file: Path) -> None:
    box.populate_model(1)
    argv = [box.model_id, "--audit", "--env-file", str(env_file), "--nodes", box.alias(1)]
    rc, out = run([*inst.model_drop, *argv], cwd=empty, env=inst.env, echo="model-drop " + " ".join(argv), stream=True)
    check(rc == 0 and out.rstrip().splitlines()[-1] == "RING_INPUT_READY", "the audit of node 1 ends RING_INPUT_READY")
    reports = Path(inst.env["XDG_DATA_HOME"]) / "modeldrop" / "reports"
    check(json.loads((reports / "latest" / "run.json").read_text())["audit"], f"the audit's run folder is in {reports}")
    argv = [str(inst.package / "suite" / "gates"), "--model", *argv[:1], *argv[2:], "--audit", "--resume-bootstrap"]
    rc, out = run([inst.python, "-m", "pytest", *argv], cwd=empty, env=inst.env,
                  echo='python -m pytest "$(model-drop --suite-dir)/gates" ' + " ".join(argv[1:]))
    check(rc == 0 and "3 skipped" in out and "reused pass" in out, "plain pytest reaches the same gates (reused)")


def check_bootstrap(inst: Install, empty: Path, box: Sandbox, env_file: Path) -> None:
    argv = [box.model_id, "--env-file", str(env_file), "--teardown"]
    rc, out = run([*inst.model_drop, *argv], cwd=empty, env=inst.env, echo="model-drop " + " ".join(argv), stream=True)
    check(rc == 0, f"the bootstrap is green (exit {rc})")
    reports = Path(inst.env["XDG_DATA_HOME"]) / "modeldrop" / "reports"
    run_doc = json.loads((reports / "latest" / "run.json").read_text())
    check(not run_doc["audit"] and all(g["outcome"] == "passed" for g in run_doc["gates"].values()),
          f"every gate passed in {reports / 'latest' / 'run.json'}")
    profiles = Path(inst.env["XDG_CONFIG_HOME"]) / "modeldrop" / "model_profiles.json"
    check(box.model_id in json.loads(profiles.read_text())["models"], f"the profile row is in {profiles}")
    print(f"run folder: {(reports / 'latest').resolve()}\nprofile:    {profiles}")
    rc, out = run([*inst.latest, "--collect-only", "-q"], cwd=empty, env=inst.env,
                  echo="model-drop-latest --collect-only -q")
    check(rc == 0 and f"(from {(reports / 'latest').resolve()}, env file {env_file})" in out,
          "model-drop-latest finds the run and its env file")


def sandbox_for(a: argparse.Namespace) -> tuple[Sandbox, bool]:
    """(the sandbox, whether this script brought it up)."""
    if a.sandbox_root:
        return Sandbox.from_root(a.sandbox_root), False
    box = Sandbox(default_root(a.slot), a.slot, 2, exo="emulator")
    box.up()
    return box, True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=".ci/operator_path.py", description=__doc__.split("\n")[0])
    ap.add_argument("--slot", type=int, default=int(os.environ.get("MODELDROP_SANDBOX_SLOT", "0")),
                    help="the demo's sandbox slot to bring up (MODELDROP_SANDBOX_SLOT, default 0)")
    ap.add_argument("--sandbox-root", type=Path, help="an up sandbox to use instead (left up)")
    ap.add_argument("--quick", action="store_true", help="no fresh venv and no bootstrap (the self-tests' form)")
    ap.add_argument("--python", default=shutil.which("python3") or sys.executable, help="the operator's Python")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    a = ap.parse_args(argv)
    from modeldrop import __version__

    work = Path(tempfile.mkdtemp(prefix="modeldrop-operator-"))
    empty = work / "empty"
    empty.mkdir()
    steps, box, ours = Steps(), None, False
    t0 = time.monotonic()
    try:
        wheel = steps.timed("build the wheel", build_wheel, steps.timed("copy the tree", copy_tree, work / "src"),
                            work / "dist", not a.quick)
        inst = steps.timed("install it" + (" (--no-deps --target)" if a.quick else " into a fresh venv"),
                           Install, work, wheel, a.python, a.quick)
        before = files_under(inst.package)
        steps.timed("--version, --help", check_cli, inst, empty, __version__)
        box, ours = steps.timed("sandbox up" if not a.sandbox_root else "sandbox", sandbox_for, a)
        env_file = operator_env_file(box, work / "operator.env")
        steps.timed("no writable data dir", check_no_data_dir, inst, empty, work, box.model_id, env_file)
        steps.timed("--audit of node 1", check_audit, inst, empty, box, env_file)
        if not a.quick:
            steps.timed("bootstrap", check_bootstrap, inst, empty, box, env_file)
        check(not any(empty.iterdir()), f"nothing written in the empty dir {empty}")
        check(files_under(inst.package) == before, f"nothing written inside the installed package {inst.package}")
        print("\noperator path: every check held")
        return 0
    except (Failed, subprocess.CalledProcessError) as e:
        print(f"\noperator path: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if box is not None and ours:
            box.down()
        print("\nfigures:")
        if "inst" in locals() and inst.venv is not None:
            print(f"  operator venv (no extras): {du_mb(inst.venv):.0f} MB; this checkout's .venv "
                  f"(sandbox,dev): {du_mb(REPO / '.venv'):.0f} MB")
        for name, s in steps.times:
            print(f"  {name:<40} {s:6.1f} s")
        print(f"  {'total':<40} {time.monotonic() - t0:6.1f} s")
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

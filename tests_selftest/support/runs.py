"""Drive whole runs of the suite (`pytest gates/ …`) in a subprocess and read back what happened.

`run_suite` runs one to its end; `start_run` starts one for a test that acts while it goes (a fault injected
when the ledger shows a gate, a Ctrl-C once a process runs on a node). Both build the one command line.

Outcomes come from the run's own junit XML, keyed by gate id, so assertions read like
`assert run.outcome("node1_verify") == "failed"` and `run.message("node1_verify")`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests_selftest.support import REPO

# Called before each whole run (with the run's arguments) and after it (with its RunResult): the fault-matrix
# harness (support/fault_plugin.py) measures what the run left on the nodes before the test cleans up.
BEFORE_RUN: list[Callable[[list[str]], None]] = []
AFTER_RUN: list[Callable[[RunResult], None]] = []


def gate_id(testcase_name: str) -> str:
    """`test_nodeK_verify[node2]` -> `node2_verify`; `test_preflight` -> `preflight`."""
    base, _, param = testcase_name.partition("[")
    name = base.removeprefix("test_")
    m = re.match(r"node(\d+)", param)
    return name.replace("nodeK", f"node{m.group(1)}") if m else name


@dataclass
class RunResult:
    """Exit status, per-gate outcome and message, and the run's output."""

    rc: int
    output: str
    report_dir: Path
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    def outcome(self, gate: str) -> str:
        """passed / failed / skipped / error, or 'not run' when the gate has no result."""
        return self.outcomes.get(gate, ("not run", ""))[0]

    def message(self, gate: str) -> str:
        """The failure or skip message of a gate."""
        return self.outcomes.get(gate, ("", ""))[1]

    def run_folder(self) -> Path:
        """The run folder this run wrote (reports/latest)."""
        return (self.report_dir / "latest").resolve()


def parse_junit(path: Path) -> dict[str, tuple[str, str]]:
    """{gate: (outcome, message)} from a junit XML file."""
    out: dict[str, tuple[str, str]] = {}
    if not path.exists():
        return out
    for case in ET.parse(path).getroot().iter("testcase"):
        if not case.get("name"):
            continue  # an interrupted session's unfinished test: no name, no outcome
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = el.get("message") or (el.text or "")
                if "[truncated; full report in element text]" in message and el.text:
                    message = el.text  # the whole message (a long preflight verdict is cut in the attribute)
                break
        out[gate_id(case.get("name", ""))] = (outcome, message)
    return out


class Run:
    """A whole run (`python -m pytest <paths> --env-file … --report-dir …`, from the repo root) in its own process
    group, its output in the report dir. The BEFORE_RUN hooks see it before it starts; `wait()` ends it and hands
    its RunResult to the AFTER_RUN hooks. Leaving a `with` block kills whatever of it still runs."""

    def __init__(self, paths: list[str], env_file: Path, report_dir: Path, *args: str,
                 extra_env: dict[str, str] | None = None):
        report_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(report_dir.glob("output-*.txt")))
        self.report_dir, self.args = report_dir, list(args)
        self.junit, self.log = report_dir / f"junit-{n}.xml", report_dir / f"output-{n}.txt"
        cmd = [sys.executable, "-m", "pytest", *paths, "--env-file", str(env_file), "--report-dir", str(report_dir),
               f"--junitxml={self.junit}", "-p", "no:cacheprovider", "-q", "-rA", *args]
        for before in BEFORE_RUN:
            before(list(args))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(extra_env or {})}, start_new_session=True)

    def running(self) -> bool:
        """The run has not ended yet."""
        return self.proc.poll() is None

    def output(self) -> str:
        """What the run printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def send(self, sig: int) -> None:
        """Send `sig` to the run's process group, as a terminal sends Ctrl-C."""
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> RunResult:
        """Wait for the run to end (killed, and TimeoutExpired raised, after `timeout` s); its result, observed by
        the AFTER_RUN hooks."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        result = RunResult(self.proc.returncode, self.output(), self.report_dir, parse_junit(self.junit), self.args)
        for after in AFTER_RUN:
            after(result)
        return result

    def kill(self) -> None:
        """SIGKILL the run's process group if the run still runs."""
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def start_run(paths: list[str], env_file: Path, report_dir: Path, *args: str,
              extra_env: dict[str, str] | None = None) -> Run:
    """Start a whole run (see Run); every whole run of the self-tests starts here."""
    return Run(paths, env_file, report_dir, *args, extra_env=extra_env)


def run_suite(paths: list[str], env_file: Path, report_dir: Path, *args: str, timeout: float = 900,
              extra_env: dict[str, str] | None = None) -> RunResult:
    """A whole run from start to end: its RunResult."""
    with start_run(paths, env_file, report_dir, *args, extra_env=extra_env) as run:
        return run.wait(timeout)


def run_printed(command: list[str], report_dir: Path, *, timeout: float = 900) -> RunResult:
    """Run a command a run printed (the one preflight names, NEXT_COMMAND) as printed, from the repo root, with
    only the observation added (its junit XML, -rA) and the same before/after hooks as `run_suite`."""
    junit = report_dir / f"junit-{len(list(report_dir.glob('junit-*.xml')))}.xml"
    cmd = [*command, f"--junitxml={junit}", "-p", "no:cacheprovider", "-rA"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    for before in BEFORE_RUN:
        before(list(command))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    result = RunResult(proc.returncode, proc.stdout + proc.stderr, report_dir, parse_junit(junit), list(command))
    for after in AFTER_RUN:
        after(result)
    return result


def later_gates_not_run(run: RunResult, gate: str, order: list[str]) -> list[str]:
    """Gates after `gate` in `order` that did run (passed or failed) — should be empty."""
    i = order.index(gate)
    return [g for g in order[i + 1:] if run.outcome(g) in ("passed", "failed", "error")]

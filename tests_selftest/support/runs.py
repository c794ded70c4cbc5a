"""Drive whole runs of the suite (`pytest gates/ …`) in a subprocess and read back what happened.

Outcomes come from the run's own junit XML, keyed by gate id, so assertions read like
`assert run.outcome("node1_verify") == "failed"` and `run.message("node1_verify")`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests_selftest.support import REPO

# Called before each whole run (with the run's arguments) and after it (with its RunResult): the fault-matrix
# harness (tests_selftest/conftest.py) measures what the run left on the nodes before the test cleans up.
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


def run_suite(paths: list[str], env_file: Path, report_dir: Path, *args: str, timeout: float = 900,
              extra_env: dict[str, str] | None = None) -> RunResult:
    """Run `python -m pytest <paths> --env-file … --report-dir …` from the repo root."""
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = report_dir / f"junit-{len(list(report_dir.glob('junit-*.xml')))}.xml"
    cmd = [sys.executable, "-m", "pytest", *paths, "--env-file", str(env_file), "--report-dir", str(report_dir),
           f"--junitxml={junit}", "-p", "no:cacheprovider", "-q", "-rA", *args]
    env = {**os.environ, **(extra_env or {})}
    for before in BEFORE_RUN:
        before(list(args))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    result = RunResult(proc.returncode, proc.stdout + proc.stderr, report_dir, parse_junit(junit), list(args))
    for after in AFTER_RUN:
        after(result)
    return result


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

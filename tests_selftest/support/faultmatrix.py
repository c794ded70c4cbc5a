"""The fault matrix: one row per injected fault, measured by the self-test that injects it.

A fault test is marked `@pytest.mark.fault("id", gate="node1_verify", signature="…", since=…, window=…)`:
- `gate`: the gate that must catch it; `signature`: a signature id (ledger.jsonl `signature` events) or text
  that must appear in that gate's message, or several joined by `|` (any one will do); `since`: the gate
  whose start is the fault's onset (default: the run's start); `window`: the run option whose value bounds
  the verdict (e.g. `--ready-timeout`).
The tests_selftest conftest wraps every marked test: each whole run it drives through `runs.run_suite`
is observed (decoys checked before and after, node processes counted right after the run, before the
test's own cleanup), and a row is appended to the results file (`MODELDROP_FAULT_RESULTS`, default
`reports/fault_matrix.jsonl`): fault, gate that caught it, signature seen, seconds from fault to verdict,
downstream gates run, processes left on the nodes, decoys harmed, results lost. The "must be 0" columns
are asserted, so a regression fails the test. Tests without a whole run (library-level faults) get a row
from their outcome and duration; they may fill `fault_row` fields themselves.
`python -m scripts.fault_matrix` runs `pytest -m fault` and prints the table.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox.procs import cmdline
from tests_selftest.support import REPO

RESULTS_ENV = "MODELDROP_FAULT_RESULTS"
MUST_BE_ZERO = ("downstream_run", "procs_left", "decoys_harmed", "results_lost")
PROCS_DEADLINE_S = 20.0


def results_path() -> Path:
    """Where rows go: $MODELDROP_FAULT_RESULTS or reports/fault_matrix.jsonl in the repo."""
    return Path(os.environ.get(RESULTS_ENV) or REPO / "reports" / "fault_matrix.jsonl")


@dataclass
class FaultRow:
    """One row of the matrix; None in a column means "not measured by this test"."""

    fault: str
    expected_gate: str
    signature: str
    test: str
    caught_by: str | None = None
    signature_seen: bool | None = None
    signature_matched: str | None = None
    verdict_s: float | None = None
    window: str | None = None
    downstream_run: int | None = None
    procs_left: int | None = None
    decoys_harmed: int | None = None
    results_lost: int | None = None
    outcome: str = "passed"
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def caught(self) -> bool:
        """The test passed and, where a run was observed, the expected gate caught the fault."""
        gate_ok = self.caught_by in (None, self.expected_gate)
        return self.outcome == "passed" and gate_ok and self.signature_seen is not False

    def violations(self) -> list[str]:
        """The "must be 0" columns that are not."""
        return [f"{c}={getattr(self, c)}" for c in MUST_BE_ZERO if getattr(self, c)]

    def append_to(self, path: Path) -> None:
        """Append the row as one JSON line (one write: safe with xdist workers appending at once)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({**asdict(self), "caught": self.caught}, sort_keys=True) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


# -- what a whole run left ------------------------------------------------------------------------
def ledger_events(folder: Path) -> tuple[list[dict], int]:
    """The run's ledger.jsonl events and how many lines did not parse."""
    events, torn = [], 0
    path = folder / "ledger.jsonl"
    if not path.exists():
        return [], 0
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            torn += 1
    return events, torn


def results_lost(folder: Path, outcomes: dict[str, tuple[str, str]]) -> tuple[int, list[str]]:
    """Gates that finished (junit says passed/failed) without a pass/fail record in ledger.jsonl, plus torn
    ledger lines, leftover temp files and a missing hand-off: each counts as one result lost."""
    events, torn = ledger_events(folder)
    recorded = {e.get("gate") for e in events if e.get("event") in ("pass", "fail")}
    lost = [f"{g} not in ledger.jsonl" for g, (o, _) in outcomes.items()
            if o in ("passed", "failed") and g not in recorded]
    lost += [f"{torn} torn ledger line(s)"] * bool(torn)
    lost += [f"temp file {p.name}" for p in folder.glob(".*.tmp")]
    lost += ["no handoff.md"] * (not (folder / "handoff.md").exists())
    return len(lost), lost


def first_failed(outcomes: dict[str, tuple[str, str]], order: list[str]) -> str | None:
    """The first gate in run order that failed or errored."""
    return next((g for g in order if outcomes.get(g, ("",))[0] in ("failed", "error")), None)


def signature_ids(events: list[dict], gate: str) -> list[str]:
    """Signature ids the run recorded for a gate."""
    return [s["id"] for e in events if e.get("event") == "signature" and e.get("gate") == gate
            for s in e.get("signatures") or []]


def verdict_seconds(events: list[dict], gate: str, since: str | None) -> float | None:
    """Seconds from the fault's onset (the start of gate `since`, else the run's first event) to the gate's
    pass/fail record."""
    if not events:
        return None
    onset = float(events[0]["t"])
    if since:
        onset = next((float(e["t"]) for e in events if e.get("event") == "gate_start" and e.get("gate") == since),
                     onset)
    end = next((float(e["t"]) for e in events if e.get("event") in ("pass", "fail") and e.get("gate") == gate), None)
    return None if end is None else round(end - onset, 2)


def option_value(args: list[str], option: str | None) -> str | None:
    """`--ready-timeout 30` from a run's arguments (the last one wins), or None."""
    if not option:
        return None
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == option]
    values += [a.split("=", 1)[1] for a in args if a.startswith(option + "=")]
    return f"{option} {values[-1]}" if values else f"{option} (default)"


# -- node processes and decoys --------------------------------------------------------------------
def proc_start_ticks(pid: int) -> int | None:
    """The start time of a live, non-zombie pid in clock ticks since boot (None when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return None if rest[0] == "Z" else int(rest[19])


def node_processes(sbx: Any, exclude: set[int]) -> list[str]:
    """Every live process of the sandbox's node users (and their exo emulators), but `exclude`d pids."""
    out = []
    for k in range(1, sbx.n_nodes + 1):
        for pid in sbx.node_pids(k):
            if pid not in exclude:
                out.append(f"node{k} pid {pid}: {(cmdline(pid) or '?')[:120]}")
    return out


def wait_no_node_processes(sbx: Any, exclude: set[int], deadline_s: float = PROCS_DEADLINE_S) -> list[str]:
    """Poll until the nodes hold no process but `exclude`d ones, or the deadline; returns what was left."""
    end = time.monotonic() + deadline_s
    left = node_processes(sbx, exclude)
    while left and time.monotonic() < end:
        time.sleep(0.2)
        left = node_processes(sbx, exclude)
    return left


@dataclass
class Decoy:
    """A process that is named like exo but is not the suite's: it must survive every run."""

    what: str
    proc: subprocess.Popen
    start: int | None

    def alive(self) -> bool:
        """Still the same process (pid and start time)."""
        return self.proc.poll() is None and proc_start_ticks(self.proc.pid) == self.start


def _decoy_dir(sbx: Any) -> Path:
    d = Path(sbx.root) / "decoy"
    (d / "bin").mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    os.chmod(d / "bin", 0o755)
    exe = d / "bin" / "exo"  # another program (sleep) under the name exo
    if not exe.exists():
        exe.symlink_to("/bin/sleep")
    return exe


def start_decoys(sbx: Any) -> list[Decoy]:
    """Per node: the node user running another program named exo with argv[0] = the node's EXO_CMD, and
    another user (nobody) running the same; both outlive any run."""
    exe = _decoy_dir(sbx)
    nobody = pwd.getpwnam("nobody")
    decoys = []
    for k in range(1, sbx.n_nodes + 1):
        exo_cmd = str(sbx.node(k).exo_cmd)
        for label, pw in ((f"node{k} user", pwd.getpwnam(sbx.node_user(k))), ("another user", nobody)):
            proc = subprocess.Popen([exo_cmd, "86400"], executable=str(exe), user=pw.pw_uid, group=pw.pw_gid,
                                    extra_groups=[], cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
            decoys.append(Decoy(f"{label}: {exe} as {exo_cmd}", proc, _wait_start(proc.pid)))
    return decoys


def _die_with_parent() -> None:
    """In the decoy, after its user change: SIGTERM when the process that started it dies (a test worker
    killed mid-run must not leave decoys behind). Linux prctl(PR_SET_PDEATHSIG)."""
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _wait_start(pid: int) -> int | None:
    """The decoy's start time once it has exec'd the decoy program (polled with a deadline)."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "exo":
                return proc_start_ticks(pid)
        except OSError:
            return None
        time.sleep(0.02)
    return proc_start_ticks(pid)


def stop_decoys(decoys: list[Decoy]) -> None:
    """Stop the decoys this harness started (by their Popen handle)."""
    for d in decoys:
        if d.proc.poll() is None:
            d.proc.terminate()
    for d in decoys:
        try:
            d.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()

"""Whole runs of issue 22's guide defaults on the cluster sandbox (the EXO emulator, short windows):

- the guide's config block as it is (no exo key) with each node's exo where Homebrew puts it (/opt/homebrew/bin/exo,
  each node its own: the sandbox's `homebrew_exo`) and an exo already running on node 2, started as the guide
  starts it: preflight names it (pid, program, owner, API port) and the one command that clears it, and stops
  nothing; that command, run as printed, stops it by pid and the run is green, with the guide's --no-fast-synch on
  every exo start and every exo log kept in the run folder;
- /state lagging on every node (no runner of the instance in any /state): the run that served is green, the
  transport gate checks the ring from the runners' own hostfile lines and sockets and says so.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import signal
import time
from pathlib import Path

import pytest

from tests_selftest.support.cluster_runs import (
    ORDER,
    WINDOWS,
    guide_env_for,
    launch_records,
    proc_start,
    quick_edges,
    reset_nodes,
    stop_leftovers,
    wait_gone,
)
from tests_selftest.support.runs import run_printed, run_suite

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(900)]
BREW_EXO = "/opt/homebrew/bin/exo"


@pytest.fixture
def box(sbx):
    """The cluster sandbox probing edges every 2 s (`quick_edges`), its nodes reset after the test."""
    quick_edges(sbx)
    yield sbx
    reset_nodes(sbx)


def events(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "ledger.jsonl").read_text().splitlines()]


def warnings_in(folder: Path) -> list[str]:
    return [str(e.get("value")) for e in events(folder) if e.get("event") == "warning"]


def guide_env_without_exo_keys(box, tmp_path: Path) -> Path:
    """The guide's block pointed at the sandbox, and no EXO_CMD key at all (the guide's block has none)."""
    env = guide_env_for(box, tmp_path)
    env.write_text("".join(x for x in env.read_text().splitlines(keepends=True) if not x.startswith("EXO_CMD")))
    assert "EXO_CMD" not in env.read_text()
    return env


def node_exo_pids(box, k: int, program: str) -> list[int]:
    """pids of node k's user running `program` as their script (argv[1])."""
    uid = pwd.getpwnam(box.node_user(k)).pw_uid
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and p.stat().st_uid == uid and \
                    (p / "cmdline").read_bytes().split(b"\0")[1:2] == [program.encode()]:
                out.append(int(p.name))
        except (OSError, IndexError):
            continue
    return out


def start_guide_exo(box, k: int) -> int:
    """exo started on node k as the guide starts it (nohup-style, detached from the SSH session); its pid once
    its API answers (polled with a deadline)."""
    line = (f"{BREW_EXO} --api-port 52415 --verbose --no-fast-synch --no-downloads")
    r = box.run_on(k, ["sh", "-c", f'cd && EXO_OFFLINE=true setsid -f {line} >guide-exo.log 2>&1 </dev/null'])
    assert r.returncode == 0, r.stderr
    deadline, pids = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        pids = node_exo_pids(box, k, BREW_EXO)
        connect = f"import socket; socket.create_connection(('{box.address(k)}', 52415), 1)"
        probe = box.run_on(k, ["python3", "-c", connect])
        if pids and probe.returncode == 0:
            return pids[0]
        time.sleep(0.3)
    raise AssertionError(f"the guide-style exo on node{k} never served (pids {pids})")


class LivePid:
    """A process the test started over SSH, as the fault harness watches its own decoys (`poll()` like Popen's)."""

    def __init__(self, pid: int):
        self.pid, self.start = pid, proc_start(pid)

    def poll(self) -> int | None:
        now = proc_start(self.pid)
        return None if now is not None and abs(now - float(self.start or 0)) <= 1.5 else 0


@pytest.mark.fault("foreign-exo-guide-config", gate="preflight", signature="exo this run did not start")
def test_guide_config_homebrew_exo_and_an_exo_already_running_on_node2(box, tmp_path, fault_decoys):
    box.set_homebrew_exo(True)
    env = guide_env_without_exo_keys(box, tmp_path)
    foreign = start_guide_exo(box, 2)
    fault_decoys["the guide's exo on node2"] = LivePid(foreign)  # preflight must leave it running
    reports = tmp_path / "reports"
    try:
        t0 = time.monotonic()
        first = run_suite(["gates/"], env, reports, *WINDOWS, timeout=600)
        said = first.message("preflight")
        print(f"\nMEASURE preflight with an exo already running on node2 ({time.monotonic() - t0:.1f}s run):\n{said}\n"
              f"--- the run's terminal output, last lines:\n{first.output[-2500:]}")
        assert first.outcome("preflight") == "failed" and first.rc != 0, first.output[-3000:]
        assert all(first.outcome(g) in ("skipped", "not run") for g in ORDER[1:])
        who = f"node2 ({box.alias(2)}): exo this run did not start is running: pid {foreign} {BREW_EXO} (Homebrew, " \
              f"user {box.node_user(2)}, API port 52415, serving)"
        assert who in said and "API port 52415 is in use" not in said, said
        assert os.path.exists(f"/proc/{foreign}"), "preflight stopped an exo it did not start"
        command = re.search(r"clear them with one command: (.+?) \(stops only", said).group(1)
        assert command.endswith(" --stop-existing-exo") and f"--env-file {env}" in command
        fault_decoys.clear()  # the command the run printed stops it: that is what it is for
        t1 = time.monotonic()
        second = run_printed(shlex.split(command) + ["--teardown"], reports, timeout=600)
        print(f"MEASURE the printed command: rc {second.rc} in {time.monotonic() - t1:.1f}s; the run was:\n{command}")
        folder = second.run_folder()
        for g in ORDER:
            assert second.outcome(g) == "passed", (g, second.message(g), second.output[-3000:])
        assert wait_gone([{"pid": foreign, "start": None}]) == [], "the foreign exo still runs"
        warns = warnings_in(folder)
        assert any(w.startswith(f"node2: --stop-existing-exo stopped pid {foreign} ") for w in warns), warns
        notes = [e.get("value") for e in events(folder) if e.get("event") == "note" and e.get("key") == "exo"]
        assert notes == [[f"node1: exo {BREW_EXO} (found: Homebrew, no EXO_CMD_NODE1)",
                          f"node2: exo {BREW_EXO} (found: Homebrew, no EXO_CMD_NODE2)"]], notes
        recs = launch_records(folder)
        assert {r["exe"] for r in recs} == {BREW_EXO} and all("--no-fast-synch" in r["argv"] for r in recs)
        assert {r["synch_flag"] for r in recs} == {"--no-fast-synch"} and {r["role"] for r in recs} == {"canary",
                                                                                                         "cluster"}
        kept = sorted(p.name for p in (folder / "logs" / "exo").glob("*.log"))
        assert {"node1-canary-stdout.log", "node1-cluster-stdout.log", "node2-cluster-stdout.log"} <= set(kept), kept
        # the sandbox gives its node users the guide's SSH both ways (a node key, every node's host key): no warning
        assert not any(" cannot SSH to " in w for w in warns), warns
        assert wait_gone(recs) == [], "--teardown stops the cluster"
    finally:
        if os.path.exists(f"/proc/{foreign}"):
            os.killpg(foreign, signal.SIGTERM)
        stop_leftovers(launch_records(reports / "latest") if (reports / "latest").exists() else [])
        box.set_homebrew_exo(False)


def test_state_lagging_on_every_node_does_not_stop_a_run_that_served(box, tmp_path):
    """No node's /state shows the instance's runners: placement passes on serving truth and the transport gate,
    which stopped such a run with X-NO-RUNNER-MAP before, checks the ring from the runners' own hostfile lines and
    sockets, with a warning that says so."""
    for k in (1, 2):
        box.set_exo_faults(k, {"state_runner_lag": 3600.0})
    r = run_suite(["gates/"], Path(box.env_file), tmp_path / "reports", *WINDOWS, "--teardown", timeout=600)
    try:
        for g in ORDER:
            assert r.outcome(g) == "passed", (g, r.message(g), r.output[-3000:])
        warns = warnings_in(r.run_folder())
        assert any(w.startswith("transport checked from the runners' own hostfile lines and sockets") for w in warns)
        assert wait_gone(launch_records(r)) == []
    finally:
        stop_leftovers(launch_records(r.run_folder()))

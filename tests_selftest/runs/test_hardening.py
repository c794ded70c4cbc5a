"""Whole runs against the sandbox for issue 17's hardening: nothing foreign is stopped, remote work ends on the
node when its controller dies, a revision change is not resumed over, an earlier run's exo log is not this run's
evidence, and a hub that accepts and never answers ends the run in one bounded window.

Each test is a fault-matrix row. Where the run must stay green (the fault is something the run must not be
fooled by), the row records the gate that met the fault, the evidence it left, and the seconds to that gate's
verdict; the foreign process the run must spare is a decoy of the row (counted as harmed if it dies).
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modeldrop.gatetable import gate_order
from tests_selftest.support import faultmatrix as fm
from tests_selftest.support.fault_plugin import _live_decoys
from tests_selftest.support.file_runs import FAST, assert_caught, env_values, give, run
from tests_selftest.support.interrupts import hf_running, record_measure
from tests_selftest.support.listener import silent_endpoint
from tests_selftest.support.runs import RunResult, start_run

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(600)]
ORDER = gate_order(2)


def events(result: RunResult) -> list[dict]:
    return fm.ledger_events(result.run_folder())[0]


def warnings_of(result: RunResult, gate: str) -> list[str]:
    return [str(e.get("value")) for e in events(result) if e.get("event") == "warning" and e.get("gate") == gate]


def green_row(row: fm.FaultRow, result: RunResult, gate: str, seen: bool, detail: str) -> None:
    """A row whose run must stay green: the gate that met the fault, whether its evidence shows it, how long."""
    assert result.rc == 0, result.output[-4000:]
    for g in ORDER:
        assert result.outcome(g) == "passed", (g, result.message(g))
    row.caught_by, row.signature_seen, row.signature_matched = gate, seen, row.signature if seen else None
    row.verdict_s, row.detail, row.downstream_run = fm.verdict_seconds(events(result), gate, None), detail, 0


class ForeignProcess:
    """A process of a node user that the suite did not start (a decoy for the fault row: `pid`, `poll()`)."""

    def __init__(self, pid: int):
        self.pid, self.ticks = pid, fm.proc_start_ticks(pid)

    def poll(self) -> int | None:
        return None if fm.proc_start_ticks(self.pid) == self.ticks else 0

    def stop(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


def foreign_group(sbx, k: int) -> tuple[int, ForeignProcess]:
    """(leader pid, member) of a session of node k's user whose leader (sh) exited while `sleep` runs on in it."""
    pw = pwd.getpwnam(sbx.node_user(k))
    sh = subprocess.Popen(["/bin/sh", "-c", "sleep 3600 >/dev/null 2>&1 & echo $!"], user=pw.pw_uid, group=pw.pw_gid,
                          extra_groups=[], cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          start_new_session=True)
    member = int(sh.stdout.readline())
    sh.wait()
    end = time.monotonic() + 10
    while "sleep" not in (fm.cmdline(member) or ""):
        assert time.monotonic() < end, "the foreign sleep never started"
        time.sleep(0.02)
    return sh.pid, ForeignProcess(member)


def proc_start(pid: int) -> float:
    btime = next(float(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime "))
    return round(btime + fm.proc_start_ticks(pid) / os.sysconf("SC_CLK_TCK"), 2)


def stale_record(reports: Path, run_id: str, **fields) -> None:
    rec = {"node": 1, "role": "cluster", "start": 1.0, "exe": "exo", "argv": [], "env": {}, "unset_env": [],
           "generation": "new", "namespace": "n", "api_url": "http://10.9.9.9:52415", "exo_log_path": "x",
           "log_path": f"~/modeldrop-logs/{run_id}-node1-cluster.log", "runner_log_path": "r",
           "started_at": time.time() - 3600, **fields}
    path = reports / run_id / "exo" / "node1-cluster.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


# -- a stale launch record never stops a foreign group ---------------------------------------------
@pytest.mark.fault("stale-launch-record-foreign-group", gate="node1_canary", signature="left running")
def test_a_stale_launch_record_never_stops_a_foreign_group(clean, fault_row, fault_decoys):
    """Issue 17's high finding in a run: node 1's user has a session whose leader exited and whose `sleep` lives
    on. One earlier record names that leader's pid from another host (void: never probed); another, made on this
    node in this boot, names it too but the group's member is not the exo it launched (refused, said, spared)."""
    sbx, reports = clean
    leader, member = foreign_group(sbx, 1)
    fault_decoys["a foreign sleep in the group of a stale record's pid"] = member
    try:
        stale_record(reports, "20200101T000000Z-other-mac", pid=leader, start=proc_start(member.pid) - 1000)
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()  # the sandbox nodes boot with this host
        here = {"node_target": env_values(sbx)["NODES"].split(",")[0], "node_host": socket.gethostname(),
                "node_boot": boot}
        stale_record(reports, "20200101T000001Z-this-mac", pid=leader, start=proc_start(member.pid) - 1,
                     program=sys.executable, **here)
        result = run(sbx, reports)
        assert member.poll() is None, "the foreign sleep was stopped"
        said = [w for w in warnings_of(result, "node1_canary") if "left running" in w]
        green_row(fault_row, result, "node1_canary", bool(said), said[0] if said else "")
        assert said and f"pid {leader}" in said[0] and f"pid {member.pid} (sleep 3600) runs" in said[0], said
    finally:
        member.stop()


# -- a previous run's exo log is not this run's evidence -------------------------------------------
@pytest.mark.fault("stale-exo-log-other-run", gate="transport", signature="hostfile")
def test_a_previous_runs_exo_log_is_not_read_as_this_runs(clean, fault_row):
    """Node 1's ~/.cache/exo/exo_log/exo.log holds another instance's ring hosts, and this run's exo logs elsewhere
    (XDG_CACHE_HOME set for it): transport must judge this instance by its own lines and pass."""
    sbx, reports = clean
    home = sbx.node_home(1)
    stale = home / ".cache" / "exo" / "exo_log" / "exo.log"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("[ 2026-01-01 10:00:00.000 | INFO     | exo.worker.runner:main:1 ] rank 0 hostfile: "
                     '/tmp/hosts.json hosts: ["10.9.9.1:56070","10.9.9.2:56070"]\n' * 2)
    wrapper = home / "bin" / "exo-logs-elsewhere"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nXDG_CACHE_HOME="$HOME/.cache-elsewhere" exec '
                       f'{env_values(sbx)["EXO_CMD_NODE1"]} "$@"\n')
    wrapper.chmod(0o755)
    for p in (stale.parent.parent.parent, stale.parent.parent, stale.parent, stale, wrapper.parent, wrapper):
        give(sbx, 1, p)
    result = run(sbx, reports, extra_env={"EXO_CMD_NODE1": str(wrapper)})
    ledger = (result.run_folder() / "ledger.html").read_text()
    green_row(fault_row, result, "transport", "10.9.9.1" not in ledger and "hostsByNode" not in result.output,
              "transport judged the instance by the hostfile lines this run's exo wrote")
    assert "10.9.9.1" not in ledger


# -- the controller dies mid-download ----------------------------------------------------------------
def node_records(sbx, k: int) -> list[Path]:
    folder = sbx.node_home(k) / ".modeldrop" / "running"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


@pytest.mark.fault("controller-killed-mid-download", gate="preflight", signature="no hf left")
def test_the_nodes_hf_ends_by_itself_when_the_controller_is_killed(clean, fault_row):
    """SIGKILL the whole controller (the pytest process group) while node 1's hf downloads over a slow link: hf and
    its supervisor end on the node within a heartbeat and a grace; the next run's preflight finds nothing left (it
    would name and stop what still ran)."""
    sbx, reports = clean
    decoys = _live_decoys(sbx)
    sbx.hub.set_faults({"slow_link_bps": 40_000})  # the 1.6 MB model takes ~40 s
    try:
        with start_run(["gates/"], Path(sbx.env_file), reports, *FAST) as controller:
            end = time.monotonic() + 120
            while not (hf := hf_running(sbx, 1)) or not node_records(sbx, 1):
                assert controller.running() and time.monotonic() < end, "never saw hf download running on node1"
                time.sleep(0.1)
            controller.kill()  # SIGKILL to its whole process group
        t0 = time.monotonic()
        left = fm.wait_no_node_processes(sbx, {d.proc.pid for d in decoys}, deadline_s=60)
        gone_s = time.monotonic() - t0
    finally:
        sbx.hub.set_faults({})
    record_measure("controller-sigkill", gone_s, "controller-killed-mid-download")
    assert left == [], left
    assert all(d.alive() for d in decoys)
    assert gone_s < 15, gone_s  # a heartbeat (5 s) and the child's grace (5 s), with slack for a loaded host
    assert node_records(sbx, 1) == []
    result = run(sbx, reports, "-k", "preflight")
    assert result.outcome("preflight") == "passed", result.output[-3000:]
    leftovers = [w for w in warnings_of(result, "preflight") if "left running by a run" in w]
    fault_row.caught_by, fault_row.signature_seen = "preflight", not leftovers
    fault_row.signature_matched, fault_row.downstream_run = fault_row.signature if not leftovers else None, 0
    fault_row.verdict_s, fault_row.detail = round(gone_s, 1), f"node1's hf (pids {hf}) gone {gone_s:.1f}s after SIGKILL"


# -- a changed revision is not resumed over ------------------------------------------------------------
@pytest.mark.fault("revision-changed-resume", gate="preflight", signature="hf_revision=main")
def test_resume_after_a_revision_change_downloads_and_verifies_again(clean, fault_row):
    """A resume after --revision changed reuses nothing the revision decides: preflight (its serving verdict reads
    that revision's metadata) and, after it, the download and verify run again."""
    sbx, reports = clean
    files = ["-k", "preflight or node1_download or node1_verify"]
    first = run(sbx, reports, *files)
    for g in ("preflight", "node1_download", "node1_verify"):
        assert first.outcome(g) == "passed", (g, first.message(g), first.output[-3000:])
    commit = sbx.hub.commit(env_values(sbx)["MODEL_ID"])
    second = run(sbx, reports, *files, "--resume-bootstrap", "--revision", commit)
    for g in ("preflight", "node1_download", "node1_verify"):
        assert second.outcome(g) == "passed", (g, second.outcome(g), second.message(g))
    assert not [e for e in events(second) if e.get("event") == "reuse"], "a pass of the old revision was reused"
    why = next((e for e in events(second) if e.get("event") == "resume_from"), {})
    assert why.get("gate") == "preflight" and f"hf_revision=main (now {commit[:12]}" in why.get("why", ""), why
    row = fault_row  # the run is green: its download and verify ran again (downstream of the fault, as they must)
    row.caught_by, row.signature_seen, row.signature_matched = "preflight", True, row.signature
    row.detail, row.downstream_run = why["why"][:160], 0
    row.verdict_s = fm.verdict_seconds(events(second), "node1_verify", None)


# -- a hub that accepts and never answers -----------------------------------------------------------
@pytest.fixture
def silent_hub():
    """http://<loopback>:<port> that accepts connections and never sends a byte (reachable from the nodes)."""
    with silent_endpoint() as url:
        yield url


@pytest.mark.fault("silent-hub-online", gate="preflight", signature="no answer within 10s", window="--stall-window")
def test_a_silent_hub_with_online_ends_at_preflight_within_one_window(clean, silent_hub):
    sbx, reports = clean
    t0 = time.monotonic()
    result = run(sbx, reports, "--online", "--stall-window", "10", extra_env={"HF_ENDPOINT": silent_hub})
    wall = time.monotonic() - t0
    assert_caught(result, "preflight", "no answer within 10s", silent_hub, "--online")
    assert "\n" not in result.message("preflight").strip()
    assert wall < 90, wall  # one 10 s window (the default is 60 s), not minutes of retries or a 4 h download
    print(f"\nMEASURE silent-hub-online: run wall {wall:.1f}s with --stall-window 10")

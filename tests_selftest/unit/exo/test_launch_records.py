"""Launch records never reach a stranger: a record names the node and boot it was made on, a group whose leader
is gone is stopped only when each member is proven ours, a record found gone is marked and never tried again.

Real processes on this host (LocalNode): the reproduction of issue 17's high finding is a process group whose
leader exited while a member (`sleep`) lives on, and an earlier run's record naming that pid with another start
time and another host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modeldrop.exo.cluster import stopped_existing_lines
from modeldrop.exo.launcher import ExoLauncher, LaunchRecord, node_identity, previous_records
from modeldrop.nodes import LocalNode
from modeldrop.probes import _proc
from tests_selftest.support.exo_fakes import FakeRunFolder, make_cfg

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="real process groups read from /proc")]
OLD_RUN = "20200101T000000Z-org--m"


def orphaned_group(member: list[str]) -> tuple[int, int]:
    """(leader pid, member pid) of a new session whose leader (sh) exited while `member` runs on in its group."""
    sh = subprocess.Popen(["/bin/sh", "-c", 'exec 3>&1; "$@" >/dev/null 2>&1 3>&- & echo $!', "sh", *member],
                          stdout=subprocess.PIPE, start_new_session=True)
    member_pid = int(sh.stdout.readline())
    sh.wait()
    deadline = time.monotonic() + 10
    # cmdline reads [] while the forked shell execs the member: wait for the member's own argv0
    while ((_proc.proc_info(member_pid) or {}).get("cmdline") or [None])[0] != member[0]:
        assert time.monotonic() < deadline, "the member never started"
        time.sleep(0.02)
    return sh.pid, member_pid


def alive(pid: int) -> bool:
    return _proc.proc_info(pid) is not None


def write_record(reports: Path, run: str, **fields) -> Path:
    rec = {"node": 1, "role": "cluster", "pid": 1, "start": 1.0, "exe": "~/exo/.venv/bin/exo", "argv": [], "env": {},
           "unset_env": [], "generation": "new", "namespace": "n", "api_url": "http://10.9.9.9:52415",
           "log_path": f"~/modeldrop-logs/{run}-node1-cluster.log", "exo_log_path": "x", "runner_log_path": "r",
           "started_at": time.time() - 60, **fields}
    path = reports / run / "exo" / "node1-cluster.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture
def kill_after():
    pids: list[int] = []
    yield pids.append
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launcher_here(tmp_path) -> tuple[ExoLauncher, Path]:
    cfg = make_cfg(tmp_path)
    return ExoLauncher(LocalNode("node1"), cfg.node(1), cfg, FakeRunFolder(tmp_path / "reports" / "run-now")), \
        tmp_path / "reports"


def here(la: ExoLauncher) -> dict:
    ident = la.identity()
    return {"node_target": ident.target, "node_host": ident.hostname, "node_boot": ident.boot_id}


def test_a_stale_record_of_another_host_never_stops_a_foreign_group(tmp_path, kill_after):
    """Issue 17's reproduction: the record names a pid whose process is gone while a group with that id lives on;
    on the old code the `stop` probe's orphan path killed the group's `sleep`."""
    leader, member = orphaned_group(["sleep", "120"])
    kill_after(member)
    la, reports = launcher_here(tmp_path)
    write_record(reports, OLD_RUN, pid=leader, start=_proc.proc_info(member)["start"] - 1000,
                 node_target="u@elsewhere", node_host="another-mac", node_boot="another-boot")
    out = la.stop_previous_runs()
    assert alive(member), out
    assert out == []


def test_a_record_of_this_node_stops_a_group_only_when_every_member_is_proven_ours(tmp_path, kill_after):
    leader, member = orphaned_group(["sleep", "120"])
    kill_after(member)
    la, reports = launcher_here(tmp_path)
    path = write_record(reports, OLD_RUN, pid=leader, start=_proc.proc_info(member)["start"], program=sys.executable,
                        **here(la))
    out = la.stop_previous_runs()
    assert alive(member), out
    assert [o["result"] for o in out] == ["refused"]
    assert f"pid {member} (sleep 120) runs" in out[0]["detail"] and "nothing signalled" in out[0]["detail"]
    assert json.loads(path.read_text()).get("stopped") is None  # refused: not marked, said again next time
    lines = stopped_existing_lines(LaunchRecord.from_json({**json.loads(path.read_text()), "stopped_existing": out}))
    assert len(lines) == 1 and f"pid {leader}" in lines[0] and "left running" in lines[0]


def test_the_group_of_our_own_killed_leader_is_stopped(tmp_path, kill_after):
    """The case the orphan path exists for: exo (a python) SIGKILLed, its runner (the same python) left in its
    group. The member is proven ours and stopped; the record is then marked and never tried again."""
    leader, member = orphaned_group([sys.executable, "-c", "import time; time.sleep(120)"])
    kill_after(member)
    la, reports = launcher_here(tmp_path)
    path = write_record(reports, OLD_RUN, pid=leader, start=_proc.proc_info(member)["start"] - 0.5,
                        program=sys.executable, **here(la))
    out = la.stop_previous_runs()
    assert [o["result"] for o in out] == ["stopped-term"], out
    assert not alive(member)
    assert json.loads(path.read_text())["stopped"]["result"] == "stopped-by-later-run"
    assert la.stop_previous_runs() == [] and previous_records(reports, None, 1, la.identity())[0].stopped


def test_a_gone_record_is_marked_and_never_probed_again(tmp_path):
    la, reports = launcher_here(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    path = write_record(reports, OLD_RUN, pid=gone.pid, start=123.0, **here(la))
    assert la.stop_previous_runs() == []
    assert json.loads(path.read_text())["stopped"]["result"] == "gone"
    calls = []
    la.node.run_probe = lambda name, args, **kw: calls.append(name) or {}
    assert la.stop_previous_runs() == [] and "stop" not in calls


def test_records_are_bounded_by_node_boot_age_and_count(tmp_path):
    cfg = make_cfg(tmp_path)
    node = LocalNode("node1")
    ident = node_identity(node, cfg.node(1).target)
    reports = tmp_path / "reports"
    mine = {"node_target": ident.target, "node_host": ident.hostname, "node_boot": ident.boot_id}
    write_record(reports, "20200101T000001Z-a", **mine)
    write_record(reports, "20200101T000002Z-b", **{**mine, "node_boot": "an-earlier-boot"})
    write_record(reports, "20200101T000003Z-c", **{**mine, "node_target": "u@h2"})
    write_record(reports, "20200101T000004Z-d", **{**mine, "node_host": "another-mac"})
    write_record(reports, "20200101T000005Z-e", **{k: v for k, v in mine.items() if k != "node_boot"})
    write_record(reports, "20200101T000006Z-f", **mine, started_at=time.time() - 30 * 86400)
    write_record(reports, "20200101T000007Z-g", **mine)
    found = previous_records(reports, None, 1, ident)
    assert [r.source.parent.parent.name for r in found] == ["20200101T000007Z-g", "20200101T000001Z-a"]
    assert [r.source.parent.parent.name for r in previous_records(reports, None, 1, ident, max_runs=3)] == \
        ["20200101T000007Z-g"]

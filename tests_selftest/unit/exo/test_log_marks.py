"""Evidence from this run only: a log is read from where it stood when this run launched exo. A previous run's
exo.log (another instance's ring hosts) is not this run's evidence; a log exo started afresh since is all new."""

from __future__ import annotations

import os

from modeldrop.exo import logs as exologs
from modeldrop.exo.cluster import ExoCluster
from modeldrop.exo.launcher import ExoLauncher, LaunchRecord
from modeldrop.nodes import LocalNode
from tests_selftest.support.exo_fakes import FakeNode, FakeRunFolder, make_cfg

OLD = "[ 2026-01-01 10:00:00.000 | INFO | runner ] rank 0 hostfile: /tmp/h.json hosts: [\"10.9.9.1:56070\"]\n"
NEW = "[ 2026-01-02 10:00:00.000 | INFO | runner ] rank 0 hostfile: /tmp/h.json hosts: [\"127.0.0.1:59110\"]\n"


def mark_of(path) -> dict:
    st = os.stat(path)
    return {"inode": st.st_ino, "size": st.st_size}


def tail(node, path: str, mark: dict | None = None) -> str:
    """One log's text as the scans read it (`exologs.logs_of` for one path)."""
    return exologs.logs_of(node, [path], marks={path: mark} if mark else None).get(path, "")


def test_a_tail_with_a_mark_reads_only_what_came_after_it(tmp_path):
    node, log = LocalNode("node1"), tmp_path / "exo.log"
    log.write_text(OLD)
    mark = mark_of(log)
    assert tail(node, str(log), mark) == ""  # exo has not written yet (its start-up window)
    with open(log, "a") as f:
        f.write(NEW)
    assert tail(node, str(log), mark) == NEW
    assert tail(node, str(log)) == OLD + NEW  # without a mark: the whole tail, as before
    rotated = tmp_path / "exo.log.new"
    rotated.write_text(NEW)
    os.replace(rotated, log)  # exo rotated the old file away and started afresh: all of it is this run's
    assert tail(node, str(log), mark) == NEW
    log.write_text("x")  # truncated in place: started afresh too
    assert tail(node, str(log), {**mark_of(log), "size": 10}) == "x"


def test_the_launch_records_where_each_log_stood(tmp_path):
    cfg = make_cfg(tmp_path)
    node = FakeNode(platform="linux", home="/home/u")
    stats = {"~/.cache/exo/exo_log/exo.log": {"ok": True, "exists": True, "size": 123, "inode": 7}}

    def fs(a):
        return {"ok": True, "results": [stats.get(path, {"ok": True, "exists": False}) if op == "stat" else {"ok": True}
                                        for op, path in a["ops"]]}

    node._p_fs = fs
    rec = ExoLauncher(node, cfg.node(1), cfg, FakeRunFolder(tmp_path / "reports" / "run1")).start("cluster")
    assert rec.log_marks["~/.cache/exo/exo_log/exo.log"] == {"inode": 7, "size": 123}
    assert rec.log_marks[rec.log_path] == {"inode": None, "size": 0}  # not there yet: all of it will be this run's
    assert set(rec.log_marks) == {rec.log_path, rec.exo_log_path, rec.runner_log_path}


def test_the_scan_the_verdicts_use_reads_each_log_from_its_mark(tmp_path):
    """A previous run's exo.log (another instance's ring hosts) at the path the suite reads: the scan transport's
    hostfile check uses sees only the lines written after this run's launch."""
    cfg = make_cfg(tmp_path)
    exo_log, launch_log = tmp_path / "exo.log", tmp_path / "launch.log"
    exo_log.write_text(OLD)
    launch_log.write_text("")
    cluster = ExoCluster(cfg, None, FakeRunFolder(tmp_path / "reports" / "run1"))
    la = ExoLauncher(LocalNode("node1"), cfg.node(1), cfg, cluster.run_folder)
    la.record = LaunchRecord(node=1, role="cluster", pid=1, start=1.0, exe="exo", argv=[], env={}, unset_env=[],
                             generation="new", namespace="n", api_url="u", log_path=str(launch_log),
                             exo_log_path=str(exo_log), runner_log_path=str(tmp_path / "r.log"), started_at=1.0,
                             log_marks={str(exo_log): mark_of(exo_log), str(launch_log): mark_of(launch_log)})
    cluster.launchers[1] = la
    assert cluster.scan_logs("cluster") == {1: ""}
    with open(exo_log, "a") as f:
        f.write(NEW)
    logs = cluster.scan_logs("cluster")
    assert [h.hosts for h in exologs.hostfile_lines(logs[1])] == [["127.0.0.1:59110"]], logs


def test_each_nodes_logs_are_kept_in_the_run_folder_bounded_and_masked(tmp_path):
    """keep_logs copies this run's part of each log of a role into logs/exo/ (the end kept when it is longer than
    the bound, said in the file's first line), secrets masked; a role without a record, or a log that does not
    exist, writes nothing."""
    token = "hf_SecretTokenInALogLine99"
    cfg = make_cfg(tmp_path, HF_TOKEN=token)
    stdout, exo_log = tmp_path / "launch.log", tmp_path / "exo.log"
    exo_log.write_text(OLD)
    mark = mark_of(exo_log)
    with open(exo_log, "a") as f:
        f.write(NEW + f"env HF_TOKEN={token}\n")
    stdout.write_text("x" * 5000 + "THE END\n")
    folder = FakeRunFolder(tmp_path / "reports" / "run1")
    cluster = ExoCluster(cfg, None, folder)
    la = ExoLauncher(LocalNode("node1"), cfg.node(1), cfg, folder)
    la.record = LaunchRecord(node=2, role="cluster", pid=1, start=1.0, exe="exo", argv=[], env={}, unset_env=[],
                             generation="new", namespace="n", api_url="u", log_path=str(stdout),
                             exo_log_path=str(exo_log), runner_log_path=str(tmp_path / "absent.log"), started_at=1.0,
                             log_marks={str(exo_log): mark, str(stdout): {"inode": None, "size": 0}})
    cluster.launchers[2] = la
    assert cluster.keep_logs("canary") == {}
    kept = cluster.keep_logs("cluster", max_bytes=1000)
    assert sorted(kept) == ["logs/exo/node2-cluster-exo.log", "logs/exo/node2-cluster-stdout.log"]
    exo_text = (folder.path / "logs/exo/node2-cluster-exo.log").read_text()
    assert exo_text.splitlines()[1:] == [NEW.strip(), "env HF_TOKEN=***"] and token not in exo_text
    out = (folder.path / "logs/exo/node2-cluster-stdout.log").read_text()
    assert out.startswith(f"# node2 cluster stdout: {stdout} (bytes 4008..5008: what this run wrote, its last 1000 "
                          "bytes at most)\n") and out.endswith("THE END\n") and len(out) < 1200

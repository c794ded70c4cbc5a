"""EXO emulator as a process: flags per generation, fatal starts, PID lock, taken port, logs, dirs."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from tests_selftest.support.emulator_fixtures import EmuNode, emu_factory, fresh_subnet, wait_for  # noqa: F401


def _node(tmp_path: Path, generation: str = "new", **kw) -> EmuNode:
    addr = f"127.{fresh_subnet()}.11"
    return EmuNode(tmp_path, f"n-{generation}", addr, [addr], generation=generation, **kw)


def test_help_tells_generations_apart(tmp_path: Path) -> None:
    new = _node(tmp_path, "new").run("--help")
    old = _node(tmp_path, "old").run("--help")
    assert new.returncode == 0 and old.returncode == 0
    assert "--zenoh-port" in new.stdout and "--namespace" in new.stdout and "--discovery-port" in new.stdout
    assert "--libp2p-port" not in new.stdout
    assert "--zenoh-port" not in old.stdout and "--namespace" not in old.stdout and "--libp2p-port" in old.stdout
    for out in (new.stdout, old.stdout):
        assert out.startswith("usage: EXO")
        for flag in ("--no-api", "--api-port", "--no-worker", "--no-downloads", "--offline", "--no-batch", "-m"):
            assert flag in out


def test_bad_flag_exits_2_before_pid_lock(tmp_path: Path) -> None:
    n = _node(tmp_path)
    r = n.run("--zenoh-portx", "1")
    assert r.returncode == 2 and "usage: EXO" in r.stderr
    assert not (n.home / ".exo" / "exo.pid").exists()
    assert _node(tmp_path, "old").run("--namespace", "x").returncode == 2


def test_new_rejects_libp2p_namespace_and_bootstrap_peers(tmp_path: Path) -> None:
    n = _node(tmp_path)
    r = n.run(env={"EXO_LIBP2P_NAMESPACE": "abc"})
    assert r.returncode == 1
    assert "ValueError: EXO_LIBP2P_NAMESPACE has been removed - use EXO_ZENOH_NAMESPACE instead" in r.stderr
    assert "Traceback" in r.stderr
    lines = n.log().strip().splitlines()
    assert re.search(r"\| INFO     \| \S+ \] pid = \d+$", lines[-1]), lines
    r2 = n.run("--bootstrap-peers", "/ip4/1.2.3.4/tcp/1")
    assert r2.returncode == 1 and "Bootstrap peers has been temporarily removed" in r2.stderr


def test_old_logs_libp2p_namespace(tmp_path: Path, emu_factory) -> None:  # noqa: F811
    addr = f"127.{fresh_subnet()}.11"
    n = emu_factory("old1", addr, [addr], generation="old", layout="linux").start(env={"EXO_LIBP2P_NAMESPACE": "ns-x"})
    n.node_id()
    log = wait_for(lambda: "Unpausing API" in n.log() and n.log(), 20, "startup")
    assert "EXO_LIBP2P_NAMESPACE: ns-x" in log and "EXO_ZENOH_NAMESPACE" not in log
    assert "Starting EXO | pid=" in log
    assert (n.home / ".cache/exo/exo_log/exo.log").exists()  # Linux XDG layout
    assert re.fullmatch(r"12D3KooW\w{44}", n.node_id())
    assert not (n.home / ".cache/exo/exo.pid").exists()  # no PID file on v1.0.71


def test_new_startup_lines_pidlock_marker_and_rotation(tmp_path: Path, emu_factory) -> None:  # noqa: F811
    addr = f"127.{fresh_subnet()}.11"
    n = emu_factory("new1", addr, [addr]).start("--offline", env={"EXO_ZENOH_NAMESPACE": "zz"})
    first_id = n.node_id()
    assert re.fullmatch(r"[0-9a-f]{1,32}", first_id)
    log = wait_for(lambda: "Unpausing API" in n.log() and n.log(), 20, "startup")
    for needle in ("EXO_ZENOH_NAMESPACE: zz", "Running in OFFLINE mode — no internet checks, local models only",
                   "Running on http://0.0.0.0:52415", "Node elected Master - promoting self",
                   "First run detected"):
        assert needle in log, needle
    assert (n.home / ".exo/.dashboard_opened").exists()
    second = n.run()  # same HOME -> same cache dir -> PID lock
    assert second.returncode == 1 and "PidfileError" in second.stderr
    n.stop()
    n.start()
    assert n.node_id() != first_id  # random id per start
    wait_for(lambda: "Unpausing API" in n.log(), 20, "restart")
    assert "First run detected" not in n.log()
    assert list((n.home / ".exo/exo_log").glob("exo.*.log.zst"))


def test_taken_api_port_fails_like_exo(tmp_path: Path) -> None:
    addr = f"127.{fresh_subnet()}.11"
    foreign = socket.socket()
    foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    foreign.bind((addr, 52415))
    foreign.listen(1)
    try:
        n = EmuNode(tmp_path, "porttaken", addr, [addr])
        r = n.run("--api-port", "52415")
        assert r.returncode == 1
        assert re.search(r"OSError: \[Errno 48\] .*address already in use", r.stderr), r.stderr[-800:]
        assert "('0.0.0.0', 52415)" in r.stderr
        assert "EXO terminated due to unhandled exception" in n.log()
    finally:
        foreign.close()


def test_crash_at_start(tmp_path: Path) -> None:
    n = _node(tmp_path, faults={"crash_at_start": True})
    r = n.run()
    assert r.returncode == 1
    assert "EXO terminated due to unhandled exception" in n.log()


def test_crash_loop_exits_after_n_seconds(tmp_path: Path, emu_factory) -> None:  # noqa: F811
    addr = f"127.{fresh_subnet()}.11"
    n = emu_factory("cl", addr, [addr], faults={"crash_loop": 1.5}).start()
    n.node_id()
    rc = wait_for(lambda: n.proc.poll() is not None and (n.proc.returncode,), 20, "crash_loop exit")
    assert rc == (1,)
    assert "EXO terminated due to unhandled exception" in n.log()



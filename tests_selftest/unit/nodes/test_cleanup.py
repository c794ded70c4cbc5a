"""Long probes are registered for cleanup while they run (the rule in `Node.run_probe`): the python reports
its own pid, the registration's needles are on that process's real command line (/proc and the BSD `ps`
form the macOS path of the `procs` probe reads), it is forgotten when the probe returns, stopped at once
when its wait times out or a deadline cuts it short, and left for the session's drain on Ctrl-C.

A `hashes` probe on a FIFO blocks in open() until the test writes to it: a probe that runs exactly as long
as the test wants, through LocalNode and over SSH to a private sshd (whole runs against the sandbox's
nodes: tests_selftest/runs/test_interrupt_probes.py).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from modeldrop import cleanup, deadlines, probes
from modeldrop.cleanup import REGISTRY, RemoteProcess
from modeldrop.errors import CommandTimeout, NodeError
from modeldrop.nodes import LONG_PROBE_S, LocalNode, Node
from modeldrop.probes import _proc
from modeldrop.ssh import SSHNode

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A dir holding `w.bin`, a FIFO: hashing it blocks until something opens it for writing."""
    os.mkfifo(tmp_path / "w.bin")
    return tmp_path


@pytest.fixture(params=["local", "ssh"])
def node(request) -> Node:
    """A local node and one over SSH (a private sshd logging in as this user, so it sees the test's files);
    whatever a test left registered is stopped afterwards (by pid, after the identity check)."""
    if request.param == "local":
        n: Node = LocalNode("node1")
    else:
        sshd = request.getfixturevalue("sshd")
        n = SSHNode("node1", sshd.alias, ssh_config=sshd.ssh_config)
    yield n
    REGISTRY.drain(10)
    REGISTRY.take_stopped()
    n.close()


def release(folder: Path, deadline_s: float = 20) -> None:
    """Let a blocked hashes probe finish: open the FIFO for writing and close it (EOF). Until the probe has
    opened its end (it reports its pid first), the open fails with ENXIO: polled until the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            os.close(os.open(folder / "w.bin", os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > end:
                raise
        time.sleep(0.02)


def registered(node: Node, what: str = "probe hashes", deadline_s: float = 20) -> RemoteProcess:
    """The registration of node's running probe, once it holds the pid the probe reported, polled for until
    the deadline."""
    end = time.monotonic() + deadline_s
    while not (found := [p for p in REGISTRY.pending() if p.node is node and p.what == what and p.pid]):
        if time.monotonic() >= end:
            break
        time.sleep(0.02)
    if found:
        return found[0]
    raise AssertionError(f"no {what} registered within {deadline_s}s: {REGISTRY.pending()}")


def alive(pid: int) -> bool:
    return _proc.proc_info(pid) is not None


def wait_gone(pid: int, deadline_s: float = 10) -> bool:
    end = time.monotonic() + deadline_s
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.02)
    return not alive(pid)


def hash_in_thread(node: Node, folder: Path, timeout: float = 3600) -> tuple[threading.Thread, list]:
    out: list = []

    def work() -> None:
        try:
            out.append(node.run_probe("hashes", {"path": str(folder), "files": ["w.bin"]}, timeout=timeout))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t, out


def test_a_long_probe_registers_its_own_python_until_it_returns(node, blocked):
    t, out = hash_in_thread(node, blocked)
    proc = registered(node)
    info = _proc.proc_info(proc.pid)
    assert info is not None, "the registered pid is not a live process"
    cmdline = " ".join(info["cmdline"])
    assert os.path.basename(info["exe"]).startswith("python"), info  # the python itself, not a shell around it
    assert proc.needles[0] == probes.PROBE_TAG and proc.needles[1] == "hashes" and len(proc.needles[2]) == 12
    assert all(n in cmdline for n in proc.needles), (proc.needles, cmdline)
    (bsd,) = _proc._darwin_ps([proc.pid])  # the macOS procs probe reads `ps -o command=`: the needles are there too
    assert all(n in bsd["cmdline"] for n in proc.needles), bsd
    release(blocked)
    t.join(30)
    assert isinstance(out[0], dict) and out[0]["sha256"]["w.bin"], out
    assert [p for p in REGISTRY.pending() if p.node is node] == []
    assert REGISTRY.take_stopped() == []


def test_the_rule_is_the_timeout_unless_the_call_says(node, monkeypatch):
    seen: list[RemoteProcess] = []
    real = REGISTRY.register
    monkeypatch.setattr(REGISTRY, "register", lambda p: seen.append(p) or real(p))
    node.run_probe("fs", {"op": "exists", "path": "/"}, timeout=LONG_PROBE_S)
    assert seen == []
    node.run_probe("fs", {"op": "exists", "path": "/"}, timeout=LONG_PROBE_S + 1)
    node.run_probe("fs", {"op": "exists", "path": "/"}, timeout=5, register=True)
    node.run_probe("fs", {"op": "exists", "path": "/"}, timeout=3600, register=False)
    assert node.run_probe("stop", {"pid": 2 ** 22 + 1}, timeout=3600)["result"] == "gone"  # stop: never
    assert [p.what for p in seen] == ["probe fs", "probe fs"]
    assert len({p.needles[2] for p in seen}) == 2, "every probe run gets its own nonce"
    assert not any(alive(p.pid) for p in seen)
    assert [p for p in REGISTRY.pending() if p.node is node] == []


def test_the_pid_line_stays_out_of_results_and_errors(node):
    with pytest.raises(NodeError, match=r"probe tail failed") as err:
        node.run_probe("tail", {}, timeout=3600)
    assert cleanup.PID_TAG not in str(err.value)
    node.run_probe("fs", {"op": "exists", "path": "/"}, timeout=3600)
    assert cleanup.PID_TAG not in str(node.transcript[-1])


def test_a_probe_whose_wait_times_out_is_stopped_and_the_message_says_so(node, blocked):
    with pytest.raises(CommandTimeout, match=r"timed out after 2s; node1 pid \d+ \(probe hashes\): ") as err:
        node.run_probe("hashes", {"path": str(blocked), "files": ["w.bin"]}, timeout=2, register=True)
    pid = int(str(err.value).split(" pid ")[1].split()[0])
    if isinstance(node, SSHNode):  # closing the channel left it running: the stop is what ended it
        assert str(err.value).endswith("(probe hashes): stopped-term"), str(err.value)
    assert wait_gone(pid, 5)
    assert REGISTRY.take_stopped() and [p for p in REGISTRY.pending() if p.node is node] == []


def _signal_main_once_registered(node: Node, sig: int) -> threading.Thread:
    """From a helper thread: wait for the probe's registration, then signal this process (main thread)."""
    def work() -> None:
        registered(node)
        os.kill(os.getpid(), sig)
    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t


def test_a_probe_cut_short_by_a_deadline_is_stopped_at_once(node, blocked):
    """A gate's limit (pytest-timeout's signal method, or deadlines.alarm) raises in the main thread while it
    waits: the probe is stopped before the exception leaves run_probe, and the stop is kept for the ledger."""
    with deadlines.alarm(30, "the gate"):  # inside this test's 60 s pytest-timeout, so it is the one armed
        _signal_main_once_registered(node, signal.SIGALRM)
        with pytest.raises(deadlines.DeadlineExceeded):
            node.run_probe("hashes", {"path": str(blocked), "files": ["w.bin"]}, timeout=3600)
    (line,) = REGISTRY.take_stopped()
    assert " (probe hashes): stopped-term" in line, line
    pid = int(line.split(" pid ")[1].split()[0])
    assert not alive(pid)
    assert [p for p in REGISTRY.pending() if p.node is node] == []


def test_ctrl_c_leaves_the_probe_registered_for_the_drain(node, blocked):
    _signal_main_once_registered(node, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        node.run_probe("hashes", {"path": str(blocked), "files": ["w.bin"]}, timeout=3600)
    proc = registered(node, deadline_s=0)
    assert alive(proc.pid), "Ctrl-C reached the probe: it runs in its own session, only the drain may stop it"
    (line,) = REGISTRY.drain(20)
    assert line == f"node1 pid {proc.pid} (probe hashes): stopped-term", line
    assert not alive(proc.pid)


def test_a_pid_that_runs_something_else_now_is_left_alone(node):
    """The identity check: a registered pid whose command line lacks the probe's needles is not signalled."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        token = REGISTRY.register(RemoteProcess(node, other.pid, "probe hashes",
                                                tuple(probes.probe_argv_tags("hashes", "0123456789ab"))))
        line = REGISTRY.stop_one(token)
        assert "left alone" in line and "not ours" in line, line
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def _own_pythons_with(text: str) -> list[int]:
    """Pids of this user's python processes whose command line holds text (not the shells that start them)."""
    return [r["pid"] for r in _proc.all_procs() if r["uid"] == os.getuid() and text in " ".join(r["cmdline"] or [])
            and os.path.basename(r["exe"] or "").startswith("python")]


def _blocked_on_fifo(pid: int) -> bool:
    """Linux: one of the process's threads waits in open() for the FIFO's writer (so it has read its whole
    probe script)."""
    try:
        return any((t / "wchan").read_text() == "wait_for_partner" for t in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False


def test_ctrl_c_before_the_pid_is_read_still_leaves_the_probe_to_the_drain(node, blocked, monkeypatch):
    """The registration exists before the command starts: interrupted before the probe's pid line was read,
    the drain finds the probe by the nonce on its command line (and nothing else: a python with the same
    probe name and another nonce survives), then stops it by pid."""
    monkeypatch.setattr("modeldrop.nodes.parse_pid_line", lambda line: None)  # the pid line never read
    decoy_tags = probes.probe_argv_tags("hashes", "feedfacecafe")
    decoy = subprocess.Popen(["python3", "-", *decoy_tags], stdin=subprocess.PIPE, start_new_session=True)
    decoy.stdin.write(b"import time\ntime.sleep(60)\n")
    decoy.stdin.close()

    def interrupt_once_started() -> None:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            waiting = [p for p in REGISTRY.pending() if p.node is node and p.what == "probe hashes"]
            if waiting and any(_blocked_on_fifo(pid) for pid in _own_pythons_with(waiting[0].needles[2])):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    threading.Thread(target=interrupt_once_started, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            node.run_probe("hashes", {"path": str(blocked), "files": ["w.bin"]}, timeout=3600)
        (proc,) = [p for p in REGISTRY.pending() if p.node is node]
        assert proc.pid is None, "the pid line was read after all: this test did not cover the race"
        (pid,) = _own_pythons_with(proc.needles[2])
        (line,) = REGISTRY.drain(20)
        assert line == f"node1 pid {pid} (probe hashes): stopped-term", line
        assert wait_gone(pid, 5)
        assert decoy.poll() is None, "a probe with another nonce was stopped"
    finally:
        decoy.kill()
        decoy.wait()


def test_a_probe_that_never_started_is_gone_at_the_drain(node):
    token = REGISTRY.register(RemoteProcess(node, None, "probe hashes",
                                            tuple(probes.probe_argv_tags("hashes", probes.new_nonce()))))
    assert REGISTRY.stop_one(token) == "node1 pid ? (probe hashes): gone (never reported a pid)"


def test_without_a_pid_or_a_nonce_nothing_is_looked_up():
    """Words any process could carry are no identity: such a registration is never searched for."""
    assert probes.is_nonce(probes.new_nonce()) and not probes.is_nonce(probes.PROBE_TAG)
    assert not probes.is_nonce("hashes") and not probes.is_nonce("0BADC0FFEE00")
    token = REGISTRY.register(RemoteProcess(LocalNode("node1"), None, "probe hashes", (probes.PROBE_TAG, "hashes")))
    assert REGISTRY.stop_one(token) == \
        "node1 pid ? (probe hashes): no pid reported and no nonce to find it by: left alone"


@pytest.mark.parametrize("leader", [True, False], ids=["group-leader", "under-a-shell"])
def test_a_stopped_tool_probe_takes_its_tool_with_it(leader: bool):
    """The stop probe signals a session leader's group, else the pid alone (a login shell that did not exec):
    either way the tool the probe runs ends with it."""
    tags = probes.probe_argv_tags("tool", "5ca1ab1e0000")
    argv = ["python3", "-", *tags] if leader else ["/bin/sh", "-c", 'python3 - "$@"; true', "sh", *tags]
    probe = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             start_new_session=True)
    probe.stdin.write(probes.probe_payload("tool", {"path": "/bin/sleep", "args": ["300"], "timeout": 600}))
    probe.stdin.close()
    pid = cleanup.parse_pid_line(probe.stderr.readline().decode())
    try:
        end = time.monotonic() + 20
        while not (tools := [r for r in _proc.all_procs() if r["ppid"] == pid and r["cmdline"][:1] == ["/bin/sleep"]]):
            assert time.monotonic() < end, "the tool never started"
            time.sleep(0.02)
        info = _proc.proc_info(pid)
        res = LocalNode("node1").run_probe("stop", {"pid": pid, "expect_start": info["start"],
                                                    "expect_argv0": info["cmdline"][0], "grace_s": 5})
        assert res["result"] == "stopped-term", res
        assert wait_gone(tools[0]["pid"], 5), "the probe's tool outlived it"
    finally:
        os.killpg(probe.pid, signal.SIGKILL)
        probe.wait()

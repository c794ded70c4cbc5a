"""SSHNode against a private sshd, and LocalNode: commands, timeouts, one reused connection, host keys,
ssh_config, env in the command, redaction, detached spawn surviving the channel, guarded stop."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from modeldrop.errors import CommandTimeout, NodeError
from modeldrop.nodepool import make_node
from modeldrop.nodes import LocalNode
from modeldrop.ssh import SSHNode
from tests_selftest.support.sshd_fixture import SSHDHandle, keygen

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def node(sshd) -> SSHNode:
    n = SSHNode("node1", sshd.alias, ssh_config=sshd.ssh_config)
    yield n
    n.close()


def test_command_runs_and_reports(node):
    r = node.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=20)
    assert (r.rc, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert r.argv == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert node.transcript[-1]["rc"] == 3 and node.transcript[-1]["node"] == "node1"


def test_argv_is_quoted_not_interpreted(node):
    r = node.run(["printf", "%s|", "a b", "$HOME", "it's", ";", "*"], timeout=20)
    assert r.stdout == "a b|$HOME|it's|;|*|"


def test_large_output_on_both_streams(node):
    r = node.run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero | tr '\\0' b >&2"],
                 timeout=60)
    assert len(r.stdout) == 3_000_000 and len(r.stderr) == 3_000_000


def test_timeout_fires_with_partial_output(node):
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as exc:
        node.run(["sh", "-c", "echo started; sleep 30"], timeout=1.5)
    assert time.monotonic() - t0 < 6
    assert "timed out after 1.5s" in str(exc.value) and "started" in exc.value.partial
    assert node.transcript[-1]["rc"] == "timeout"
    assert node.run(["true"], timeout=10).rc == 0


def test_one_connection_reused_and_reconnect_once(node):
    node.run(["true"], timeout=10)
    t = node.transport()
    for _ in range(3):
        node.run(["true"], timeout=10)
        node.run_probe("dirsize", {"path": "/nonexistent"}, timeout=30)
    assert node.transport() is t
    t.close()  # the transport dies under us: the next command reconnects
    assert node.run(["echo", "again"], timeout=10).stdout == "again\n"
    assert node.transport() is not t


def test_secrets_redacted(node):
    secret = "hf_s3cr3tTOKENvalue"
    r = node.run(["sh", "-c", 'echo "tok=$HF_TOKEN"; echo "$1" >&2', "x", secret], timeout=10,
                 env={"HF_TOKEN": secret}, secrets=[secret])
    assert r.stdout == "tok=***\n" and r.stderr == "***\n"
    assert secret not in repr(node.transcript) and secret not in repr(r)
    with pytest.raises(CommandTimeout) as exc:
        node.run(["sh", "-c", f"echo {secret}; sleep 20"], timeout=1, secrets=[secret])
    assert secret not in str(exc.value) and secret not in exc.value.partial


def test_env_travels_in_the_command(node, sshd):
    assert "AcceptEnv" not in (sshd.log.parent / "sshd_config").read_text()
    r = node.run(["sh", "-c", 'echo "$FOO|${HOME-unset}"'], timeout=10, env={"FOO": "bar baz"}, unset_env=["HOME"])
    assert r.stdout == "bar baz|unset\n"


def test_stream_calls_on_line_live(node):
    seen: list[tuple[float, str, str]] = []
    t0 = time.monotonic()
    r = node.stream(["sh", "-c", "echo one; echo two >&2; sleep 1; echo three"], timeout=20,
                    on_line=lambda s, line: seen.append((time.monotonic() - t0, s, line)))
    assert r.rc == 0 and [(s, line) for _, s, line in seen if s == "stdout"] == [("stdout", "one"), ("stdout", "three")]
    assert ("stderr", "two") in [(s, line) for _, s, line in seen]
    arrived = {line: t for t, _, line in seen}
    assert arrived["three"] - arrived["one"] > 0.5  # 'one' arrived live, a second before the command ended (a
    # bound on the time from the start would measure the SSH handshake and a loaded host, not liveness)


def test_ssh_config_alias_user_port_identity(sshd):
    n = SSHNode("node2", sshd.alias, ssh_config=sshd.ssh_config)
    r = n.resolved
    assert (r.hostname, r.port, r.user, r.identity_files, r.known_hosts) == (
        sshd.addr, sshd.port, sshd.user, [str(sshd.key)], sshd.known_hosts)
    assert n.address() == sshd.addr
    assert n.run_probe("facts", {})["ssh_server_addr"] == sshd.addr
    n.close()


def test_user_host_port_target(sshd, tmp_path):
    cfg = tmp_path / "cfg"
    cfg.write_text(f"Host {sshd.addr}\n    IdentityFile {sshd.key}\n")
    n = make_node("node3", sshd.target, ssh_config=cfg, known_hosts=sshd.known_hosts)
    assert isinstance(n, SSHNode) and n.run(["whoami"], timeout=10).stdout.strip() == sshd.user
    n.close()


def bare_config(sshd: SSHDHandle, tmp_path: Path) -> Path:
    """The sshd's ssh_config without its UserKnownHostsFile, and an empty GlobalKnownHostsFile."""
    lines = [ln for ln in sshd.ssh_config.read_text().splitlines() if "KnownHostsFile" not in ln]
    (tmp_path / "global_known_hosts").write_text("")
    cfg = tmp_path / "bare_ssh_config"
    cfg.write_text("\n".join(lines + [f"    GlobalKnownHostsFile {tmp_path / 'global_known_hosts'}"]) + "\n")
    return cfg


def test_unknown_host_key_rejected_one_line(sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    n = SSHNode("node1", sshd.alias, ssh_config=bare_config(sshd, tmp_path), known_hosts=kh)
    with pytest.raises(NodeError) as exc:
        n.run(["true"], timeout=10)
    msg = str(exc.value)
    assert "\n" not in msg and "--accept-new-host-keys" in msg and "node1" in msg and "ssh-ed25519" in msg
    assert kh.read_text() == ""


def test_new_host_key_accepted_and_recorded(sshd, tmp_path):
    kh = tmp_path / "sub" / "known_hosts"
    cfg = bare_config(sshd, tmp_path)
    n = SSHNode("node1", sshd.alias, ssh_config=cfg, known_hosts=kh, accept_new_host_keys=True)
    assert n.run(["true"], timeout=10).rc == 0
    n.close()
    line = kh.read_text().strip()
    assert line == f"[{sshd.addr}]:{sshd.port} {' '.join(sshd.host_pub.split()[:2])}"
    strict = SSHNode("node1", sshd.alias, ssh_config=cfg, known_hosts=kh)
    assert strict.run(["true"], timeout=10).rc == 0
    strict.close()


def test_changed_host_key_never_accepted(sshd, tmp_path):
    other = keygen(tmp_path / "other")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{sshd.addr}]:{sshd.port} {' '.join(other.split()[:2])}\n")
    n = SSHNode("node1", sshd.alias, ssh_config=bare_config(sshd, tmp_path), known_hosts=kh,
                accept_new_host_keys=True)
    with pytest.raises(NodeError, match="host key CHANGED"):
        n.run(["true"], timeout=10)


def test_connect_failure_one_line(sshd):
    n = SSHNode("node4", f"{sshd.user}@{sshd.addr}:1", known_hosts=sshd.known_hosts, connect_timeout=3)
    with pytest.raises(NodeError) as exc:
        n.run(["true"], timeout=5)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"node4 ({sshd.user}@{sshd.addr}:1 -> ") and "cannot connect" in msg


def test_probe_python_picked_once(node):
    node.run_probe("facts", {})
    picked = node._picked_python
    assert picked and Path(picked).name.startswith("python3")
    node.run_probe("fs", {"op": "exists", "path": "/"})
    assert node.transcript[-1]["argv"][:3] == ["<probe>", "fs", f"({picked})"]


def _spawn(node, tmp_path: Path) -> dict:
    return node.run_probe("spawn", {"argv": ["/bin/sleep", "300"], "env": {"X": "1"}, "unset_env": [], "cwd": "/",
                                    "log_path": str(tmp_path / "logs" / "sleep.log"),
                                    "pid_file": str(tmp_path / "sleep.pid")})


def test_spawn_survives_channel_close_and_stop_checks_identity(node, tmp_path):
    child = _spawn(node, tmp_path)
    assert (tmp_path / "sleep.pid").read_text().strip() == str(child["pid"])
    node.close()  # the whole SSH connection goes away
    other = SSHNode("node1b", node.target, ssh_config=node.ssh_config)
    try:
        live = other.run_probe("procs", {"pids": [child["pid"]], "exe_paths": None})["procs"]
        assert len(live) == 1 and abs(live[0]["start"] - child["start"]) < 1
        wrong_start = other.run_probe("stop", {"pid": child["pid"], "expect_start": child["start"] - 100,
                                               "expect_exe": "/bin/sleep", "grace_s": 2})
        assert wrong_start["result"] == "mismatch" and "pid reused" in wrong_start["detail"]
        wrong_exe = other.run_probe("stop", {"pid": child["pid"], "expect_start": child["start"],
                                             "expect_exe": "/usr/bin/python3", "grace_s": 2})
        assert wrong_exe["result"] == "mismatch"
        assert other.run_probe("procs", {"pids": [child["pid"]], "exe_paths": None})["procs"]
        done = other.run_probe("stop", {"pid": child["pid"], "expect_start": child["start"],
                                        "expect_exe": "/bin/sleep", "grace_s": 5})
        assert done["result"] == "stopped-term", done
        assert other.run_probe("stop", {"pid": child["pid"], "expect_start": child["start"], "grace_s": 1})[
            "result"] == "gone"
    finally:
        other.run_probe("stop", {"pid": child["pid"], "expect_start": child["start"], "grace_s": 1})
        other.close()


def test_local_node_basics(tmp_path):
    n = LocalNode("node1", python_cmd="/usr/bin/python3")
    assert n.address() == "127.0.0.1" and n.target == "local"
    r = n.run(["sh", "-c", 'echo "$A"; exit 2'], timeout=10, env={"A": "x"})
    assert (r.rc, r.stdout) == (2, "x\n")
    assert n.run(["/nonexistent/tool"], timeout=5).rc == 127
    with pytest.raises(CommandTimeout):
        n.run(["sleep", "10"], timeout=0.5)
    assert isinstance(make_node("node1", "local", ssh_config=Path("/x")), LocalNode)


def test_tilde_python_cmd(sshd):
    n = SSHNode("node1", sshd.alias, ssh_config=sshd.ssh_config, python_cmd="~/../../usr/bin/python3")
    assert os.path.realpath(n.run_probe("facts", {})["python"]) == os.path.realpath("/usr/bin/python3")
    n.close()


def test_ssh_config_include_and_proxyjump(sshd, tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "nodes.conf").write_text(sshd.ssh_config.read_text())
    main = tmp_path / "config"
    main.write_text(f"Include {tmp_path}/conf.d/*.conf\nHost jumped\n    HostName {sshd.addr}\n    Port {sshd.port}\n"
                    f"    User {sshd.user}\n    IdentityFile {sshd.key}\n    UserKnownHostsFile {sshd.known_hosts}\n"
                    f"    ProxyJump {sshd.alias}\n")
    n = SSHNode("node1", sshd.alias, ssh_config=main)
    assert n.run(["echo", "via include"], timeout=10).stdout == "via include\n"
    n.close()
    jumped = SSHNode("node2", "jumped", ssh_config=main)
    assert jumped.resolved.proxy_command == f"ssh -F {main} -W {sshd.addr}:{sshd.port} {sshd.alias}"
    assert jumped.run(["echo", "via jump"], timeout=20).stdout == "via jump\n"
    jumped.close()


def test_ports_probe_counts_the_address_the_node_is_reached_at(node, sshd):
    import socket
    with socket.socket() as s:
        s.bind((sshd.addr, 0))
        s.listen(1)
        p = node.run_probe("ports", {"port": s.getsockname()[1], "addresses": ["127.0.0.1"]})
    assert not p["free"] and sshd.addr in p["addresses"] and p["listening_on"] == [sshd.addr]


def test_killed_command_says_so(node):
    r = node.run(["sh", "-c", "kill -9 $$"], timeout=10)
    assert r.rc == -1 and "closed without an exit status" in r.stderr


def test_lines_split_across_chunks_and_a_long_line_in_pieces():
    """Lines cut anywhere by the transport come out whole, `\\r\\n` trimmed, the unfinished tail at finish."""
    from modeldrop.nodes import _Lines
    seen: list[str] = []
    lines = _Lines("stdout", lambda _s, line: seen.append(line))
    long = b"x" * 300_000
    for chunk in (b"modeldrop-p", b"id 12\r", b"\nab", *(long[i:i + 4096] for i in range(0, len(long), 4096)),
                  b"\n\nlast"):
        lines.feed(chunk)
    assert seen == ["modeldrop-pid 12", "ab" + "x" * 300_000, ""]
    assert lines.finish().endswith("\n\nlast") and seen[-1] == "last"

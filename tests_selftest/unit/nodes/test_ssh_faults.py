"""SSH faults, injected: a wedged sshd (no banner, no auth answer, no exec answer, no output), host keys
pinned in a GlobalKnownHostsFile, bracketed IPv6 targets. Each fault must end in a one-line NodeError or
CommandTimeout within its bound, never a hang."""

from __future__ import annotations

import time

import pytest

from modeldrop import validate
from modeldrop.errors import CommandTimeout, NodeError
from modeldrop.ssh import SSHNode, resolve_target, split_host_port
from tests_selftest.support.fake_sshd import FakeSSHD
from tests_selftest.support.sshd_fixture import keygen

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake(request, tmp_path):
    mode, addr = request.param if isinstance(request.param, tuple) else (request.param, "127.0.0.1")
    server = FakeSSHD(tmp_path, mode, addr)
    yield server
    server.stop()


def _node(fake: FakeSSHD, **kw) -> SSHNode:
    return SSHNode("node1", fake.target, ssh_config=fake.ssh_config, known_hosts=fake.known_hosts, **kw)


def _timed(fn):
    t0 = time.monotonic()
    with pytest.raises(NodeError) as exc:
        fn()
    return exc.value, time.monotonic() - t0


@pytest.mark.parametrize("fake", ["exec"], indirect=True)
@pytest.mark.fault("ssh-exec-request-wedged", gate="preflight", signature="timed out")
def test_exec_request_never_answered_times_out(fake):
    node = _node(fake)
    err, took = _timed(lambda: node.run(["true"], timeout=3))
    assert isinstance(err, CommandTimeout) and took < 9, took  # 3 s asked; slack for a busy CI
    assert "\n" not in str(err) and "never answered the exec request" in str(err) and "node1" in str(err)
    node.close()


@pytest.mark.parametrize("fake", ["silent"], indirect=True)
@pytest.mark.fault("ssh-command-silent", gate="preflight", signature="timed out")
def test_command_that_never_answers_times_out(fake):
    node = _node(fake)
    err, took = _timed(lambda: node.run(["true"], timeout=2))
    assert isinstance(err, CommandTimeout) and took < 8, took  # 2 s asked; slack for a busy CI
    assert "timed out after 2s" in str(err)
    node.close()


@pytest.mark.parametrize("fake", ["banner", "auth"], indirect=True)
@pytest.mark.fault("ssh-wedged-banner-or-auth", gate="preflight", signature="connect")
def test_wedged_sshd_before_the_session_is_bounded_by_connect_timeout(fake):
    node = _node(fake, connect_timeout=2)
    err, took = _timed(lambda: node.run(["true"], timeout=30))
    assert took < 8, took
    assert "\n" not in str(err) and "node1" in str(err)
    assert ("cannot connect" if fake.mode == "banner" else "authentication") in str(err)
    node.close()


@pytest.mark.parametrize("fake", [("ok", "::1")], indirect=True)
def test_bracketed_ipv6_target_connects(fake):
    assert fake.target.startswith("root@[::1]:")
    assert validate.node_spec(fake.target) == fake.target
    assert split_host_port(f"[::1]:{fake.port}") == ("::1", fake.port) and split_host_port("[::1]") == ("::1", None)
    node = _node(fake)
    assert (node.resolved.hostname, node.resolved.port) == ("::1", fake.port)
    res = node.run(["echo", "hi"], timeout=10)
    assert res.rc == 0 and res.stdout.startswith("ran: ") and "echo hi" in res.stdout
    assert node.address() == "::1"
    node.close()


@pytest.mark.parametrize("fake", ["ok"], indirect=True)
@pytest.mark.fault("host-key-pinned-globally", gate="preflight", signature="host key")
def test_key_pinned_in_global_known_hosts_wins_over_accept_new(fake, tmp_path):
    other = keygen(tmp_path / "other")
    pinned = tmp_path / "global_known_hosts"
    pinned.write_text(f"[{fake.addr}]:{fake.port} {' '.join(other.split()[:2])}\n")
    cfg = tmp_path / "cfg"
    cfg.write_text(f"Host *\n    IdentityFile {tmp_path / 'client'}\n    GlobalKnownHostsFile {pinned}\n")
    user_kh = tmp_path / "user_known_hosts"
    node = SSHNode("node1", fake.target, ssh_config=cfg, known_hosts=user_kh, accept_new_host_keys=True)
    err, _ = _timed(lambda: node.run(["true"], timeout=10))
    assert "host key CHANGED" in str(err) and str(pinned) in str(err) and "\n" not in str(err)
    assert not user_kh.exists() or user_kh.read_text() == ""
    assert fake.commands == []


@pytest.mark.parametrize("fake", ["ok"], indirect=True)
def test_other_key_type_pinned_is_not_accepted_as_new(fake, tmp_path):
    rsa = tmp_path / "rsa"
    import subprocess
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    pinned = tmp_path / "global_known_hosts"
    pinned.write_text(f"[{fake.addr}]:{fake.port} {' '.join(rsa.with_suffix('.pub').read_text().split()[:2])}\n")
    cfg = tmp_path / "cfg"
    cfg.write_text(f"Host *\n    IdentityFile {tmp_path / 'client'}\n    GlobalKnownHostsFile {pinned}\n")
    node = SSHNode("node1", fake.target, ssh_config=cfg, known_hosts=tmp_path / "kh", accept_new_host_keys=True)
    err, _ = _timed(lambda: node.run(["true"], timeout=10))
    assert ("host key refused" in str(err) or "host key CHANGED" in str(err)) and "\n" not in str(err)
    assert not (tmp_path / "kh").exists() and fake.commands == []


def test_user_known_hosts_files_from_ssh_config_are_all_read(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = tmp_path / "cfg"
    cfg.write_text(f"Host h\n    UserKnownHostsFile {a} {b}\n    GlobalKnownHostsFile none\n")
    r = resolve_target("h", cfg, None)
    assert r.user_known_hosts == [a, b] and r.known_hosts == a and r.global_known_hosts == []
    r = resolve_target("u@[fe80::1]:2222", tmp_path / "missing", tmp_path / "kh")
    assert (r.hostname, r.port, r.user, r.known_hosts) == ("fe80::1", 2222, "u", tmp_path / "kh")
    assert [str(p) for p in r.global_known_hosts] == ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"]

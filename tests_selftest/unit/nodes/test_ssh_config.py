"""Targets resolved as OpenSSH resolves them (`ssh -G`), and the ssh_config settings operators rely on honoured by
our paramiko connection against a real sshd: IdentityAgent (a key only an agent on its own socket holds, as with
1Password or Secretive), IdentitiesOnly, CertificateFile (a certificate at a name of its own, the only thing the
sshd accepts), StrictHostKeyChecking accept-new; an IdentityAgent socket that is not there and an alias SSH_CONFIG
does not know are one line each."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldrop.errors import NodeError
from modeldrop.ssh import SSHNode, agent_socket, resolve_target
from tests_selftest.support.sshd_fixture import SSHD, SSHDHandle, keygen, start_sshd

pytestmark = pytest.mark.timeout(120)
needs_sshd = pytest.mark.skipif(not os.access(SSHD, os.X_OK) or os.geteuid() != 0, reason=f"needs root and {SSHD}")


def test_ssh_g_resolves_the_sandbox_style_config_as_openssh_does(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"""Host sbx-node1
  HostName 127.0.222.11
  User mdsbn1
  Port 2201
  IdentityFile {tmp_path}/client_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile {tmp_path}/known_hosts
  StrictHostKeyChecking yes
  IdentityAgent ~/agents/a.sock
  CertificateFile %d/certs/%r-%h.pub
  ProxyCommand nc %h %p
Host *
  ConnectTimeout 5
""")
    r = resolve_target("sbx-node1", cfg, None)
    home = os.path.expanduser("~")
    assert (r.via, r.hostname, r.port, r.user) == ("ssh -G", "127.0.222.11", 2201, "mdsbn1")
    assert r.identity_files == [f"{tmp_path}/client_ed25519"] and r.identities_only
    assert r.user_known_hosts == [tmp_path / "known_hosts"] and r.strict_host_key_checking == "yes"
    assert agent_socket(r) == f"{home}/agents/a.sock"
    assert r.certificate_files == [f"{home}/certs/mdsbn1-127.0.222.11.pub"]
    assert r.proxy_command == "nc 127.0.222.11 2201" and r.host == "sbx-node1" and r.config_path == cfg
    over = resolve_target("other@sbx-node1:2299", cfg, None)  # the target's own user and port win, as on ssh's line
    assert (over.user, over.port, over.hostname) == ("other", 2299, "127.0.222.11")


def test_without_an_ssh_client_the_paramiko_parser_gives_the_same_target(tmp_path, monkeypatch):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host n1\n  HostName 10.1.2.3\n  User u\n  Port 2222\n  IdentityFile {tmp_path}/k\n"
                   "  IdentitiesOnly yes\n  StrictHostKeyChecking accept-new\n")
    by_ssh = resolve_target("n1", cfg, None)
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    by_paramiko = resolve_target("n1", cfg, None)
    assert by_paramiko.via == "paramiko" and by_ssh.via == "ssh -G"
    for field in ("hostname", "port", "user", "identity_files", "identities_only", "strict_host_key_checking"):
        assert getattr(by_ssh, field) == getattr(by_paramiko, field), field


def test_a_config_ssh_cannot_read_is_one_line(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host n1\n  HostNme 10.1.2.3\n")
    node = SSHNode("node2", "n1", ssh_config=cfg)
    with pytest.raises(NodeError) as e:
        node.run(["true"], timeout=5)
    assert str(e.value).startswith(f"node2 (n1): n1: ssh cannot read SSH_CONFIG {cfg}: ") and "line 2" in str(e.value)
    assert "\n" not in str(e.value)


def test_an_alias_not_in_ssh_config_is_said_so(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host studio1\n  HostName 127.0.0.1\n")
    node = SSHNode("node2", "studio2", ssh_config=cfg, connect_timeout=5)
    with pytest.raises(NodeError) as e:
        node.run(["true"], timeout=5)
    msg = str(e.value)
    assert msg.startswith(f"node2 (studio2): alias studio2 is not in SSH_CONFIG {cfg}") and "\n" not in msg, msg
    assert "add `Host studio2` with `HostName <address>`" in msg and "Errno" not in msg
    cfg.write_text("Host studio2\n  HostName studio2-h22b.invalid\n")
    with pytest.raises(NodeError) as e:
        SSHNode("node2", "studio2", ssh_config=cfg, connect_timeout=5).run(["true"], timeout=5)
    assert f"cannot resolve studio2-h22b.invalid (HostName of studio2 in SSH_CONFIG {cfg})" in str(e.value)


# --- against a real sshd ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cert_sshd(tmp_path_factory) -> Iterator[tuple[SSHDHandle, Path]]:
    """An sshd that also trusts user certificates signed by a CA of its own (TrustedUserCAKeys)."""
    if not os.access(SSHD, os.X_OK) or os.geteuid() != 0:
        pytest.skip(f"needs root and {SSHD}")
    work = tmp_path_factory.mktemp("certsshd")
    keygen(work / "ca")
    handle = start_sshd(work / "d", extra_config=f"TrustedUserCAKeys {work / 'ca.pub'}\n")
    yield handle, work
    handle.stop()


@pytest.fixture
def agent(tmp_path) -> Iterator[Path]:
    """An ssh-agent of our own on a socket path of its own (as 1Password or Secretive has), stopped by pid."""
    sock = tmp_path / "agent.sock"
    out = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True, check=True).stdout
    pid = int(out.split("SSH_AGENT_PID=")[1].split(";")[0])
    yield sock
    os.kill(pid, signal.SIGTERM)


def _config(path: Path, sshd: SSHDHandle, extra: str) -> Path:
    path.write_text(f"Host box\n  HostName {sshd.addr}\n  Port {sshd.port}\n  User {sshd.user}\n"
                    f"  UserKnownHostsFile {sshd.known_hosts}\n  StrictHostKeyChecking yes\n{extra}")
    return path


def _only_in_agent(sshd: SSHDHandle, sock: Path, tmp_path: Path) -> Path:
    """The client key added to the agent; the file here keeps only its public half (as 1Password's setup does)."""
    key = tmp_path / "id_agent"
    shutil.copy(sshd.key, key)
    key.chmod(0o600)
    subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, check=True,
                   capture_output=True)
    shutil.copy(sshd.key.with_suffix(".pub"), tmp_path / "id_agent.pub")
    key.unlink()
    return tmp_path / "id_agent.pub"


@needs_sshd
def test_identity_agent_on_its_own_socket_is_used(cert_sshd, agent, tmp_path, monkeypatch):
    sshd, _ = cert_sshd
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # the only agent is the one IdentityAgent names
    pub = _only_in_agent(sshd, agent, tmp_path)
    cfg = _config(tmp_path / "cfg", sshd, f'  IdentityAgent "{agent}"\n  IdentitiesOnly yes\n  IdentityFile {pub}\n')
    node = SSHNode("node1", "box", ssh_config=cfg)
    try:
        assert node.run(["echo", "via-agent"], timeout=20).stdout == "via-agent\n"
    finally:
        node.close()
    other = tmp_path / "other"
    keygen(other)  # IdentitiesOnly with another IdentityFile: the agent's key is not offered
    cfg = _config(tmp_path / "cfg2", sshd, f'  IdentityAgent "{agent}"\n  IdentitiesOnly yes\n'
                                           f"  IdentityFile {other}.pub\n")
    with pytest.raises(NodeError) as e:
        SSHNode("node1", "box", ssh_config=cfg, connect_timeout=5).run(["true"], timeout=10)
    assert "authentication failed" in str(e.value) and f"0 key(s) of the agent at {agent}" in str(e.value)


@needs_sshd
@pytest.mark.fault("identity-agent-missing", gate="preflight", signature="IdentityAgent")
def test_an_identity_agent_socket_that_is_not_there_is_one_line(cert_sshd, tmp_path):
    sshd, _ = cert_sshd
    gone = tmp_path / "Library/Group Containers/2BUA8C4S2C.com.1password/t/agent.sock"
    cfg = _config(tmp_path / "cfg", sshd, f'  IdentityAgent "{gone}"\n')
    with pytest.raises(NodeError) as e:
        SSHNode("node2", "box", ssh_config=cfg, connect_timeout=5).run(["true"], timeout=10)
    msg = str(e.value)
    assert msg.startswith("node2 (box -> ") and f"IdentityAgent {gone} (from SSH_CONFIG {cfg}) does not exist" in msg
    assert "start that agent" in msg and "remove IdentityAgent from the Host block of box" in msg and "\n" not in msg


@needs_sshd
def test_a_certificate_file_of_its_own_name_is_offered(cert_sshd, tmp_path):
    """The sshd accepts no plain key (empty authorized_keys), only a certificate from its CA: the connection works
    with CertificateFile pointing at it, and fails without."""
    sshd, work = cert_sshd
    key = tmp_path / "id_cert"
    keygen(key)
    subprocess.run(["ssh-keygen", "-q", "-s", str(work / "ca"), "-I", "h22b", "-n", sshd.user, "-V", "+1h",
                    str(key) + ".pub"], check=True, capture_output=True)
    cert = tmp_path / "certs" / "studio.pub"
    cert.parent.mkdir()
    Path(str(key) + "-cert.pub").rename(cert)  # not beside the key: only CertificateFile finds it
    authorized = Path(str(sshd.key.parent / "authorized_keys"))
    saved = authorized.read_text()
    authorized.write_text("")
    try:
        cfg = _config(tmp_path / "cfg", sshd, f"  IdentityFile {key}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
                                              f"  CertificateFile {cert}\n")
        node = SSHNode("node1", "box", ssh_config=cfg)
        try:
            assert node.run(["echo", "via-cert"], timeout=20).stdout == "via-cert\n"
        finally:
            node.close()
        cfg.write_text(cfg.read_text().replace(f"  CertificateFile {cert}\n", ""))
        with pytest.raises(NodeError, match="authentication failed"):
            SSHNode("node1", "box", ssh_config=cfg, connect_timeout=5).run(["true"], timeout=10)
    finally:
        authorized.write_text(saved)


@needs_sshd
def test_strict_host_key_checking_accept_new_records_an_unknown_host(cert_sshd, tmp_path):
    sshd, _ = cert_sshd
    kh = tmp_path / "kh"
    cfg = tmp_path / "cfg"
    cfg.write_text(f"Host box\n  HostName {sshd.addr}\n  Port {sshd.port}\n  User {sshd.user}\n"
                   f"  IdentityFile {sshd.key}\n  UserKnownHostsFile {kh}\n  StrictHostKeyChecking yes\n")
    with pytest.raises(NodeError, match="host key not in"):
        SSHNode("node1", "box", ssh_config=cfg, connect_timeout=5).run(["true"], timeout=10)
    cfg.write_text(cfg.read_text().replace("StrictHostKeyChecking yes", "StrictHostKeyChecking accept-new"))
    node = SSHNode("node1", "box", ssh_config=cfg)
    try:
        assert node.run(["true"], timeout=20).rc == 0
    finally:
        node.close()
    assert sshd.host_pub.split()[1] in kh.read_text()

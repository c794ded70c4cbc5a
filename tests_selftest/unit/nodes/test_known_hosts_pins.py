"""Host keys pinned in several known_hosts files, as OpenSSH reads them: a right key in the user file is not
blocked by a stale global entry (of another key type, or the same), and a refusal names the file that pins the
node with the command that removes the entry, which, followed, lets --accept-new-host-keys record the key."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from modeldrop.errors import NodeError
from modeldrop.ssh import SSHNode
from tests_selftest.support.fake_sshd import FakeSSHD
from tests_selftest.support.sshd_fixture import keygen

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake(tmp_path):
    (tmp_path / "sshd").mkdir()
    server = FakeSSHD(tmp_path / "sshd", "ok")
    yield server
    server.stop()


def _rsa_line(tmp_path) -> str:
    rsa = tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    return " ".join(rsa.with_suffix(".pub").read_text().split()[:2])


def _setup(fake: FakeSSHD, tmp_path, global_line: str, user_pins_right_key: bool):
    name = f"[{fake.addr}]:{fake.port}"
    glob = tmp_path / "global_known_hosts"
    glob.write_text(f"{name} {global_line}\n")
    user = tmp_path / "user_known_hosts"
    user.write_text(fake.known_hosts.read_text() if user_pins_right_key else "")
    cfg = tmp_path / "cfg"
    cfg.write_text(f"Host *\n    IdentityFile {fake.ssh_config.parent / 'client'}\n    GlobalKnownHostsFile {glob}\n")
    return name, glob, user, cfg


@pytest.mark.parametrize("stale", [  # the finding: a global entry of another key type blocked a right user pin
    pytest.param("other key type", marks=pytest.mark.fault("wrong-global-known-host", gate="preflight",
                                                           signature="host key")),
    "same key type"])
def test_a_stale_global_entry_does_not_block_a_right_user_pin(fake, tmp_path, stale):
    line = _rsa_line(tmp_path) if stale == "other key type" else " ".join(keygen(tmp_path / "old").split()[:2])
    _, _, user, cfg = _setup(fake, tmp_path, line, user_pins_right_key=True)
    node = SSHNode("node1", fake.target, ssh_config=cfg, known_hosts=user)
    res = node.run(["true"], timeout=10)
    assert res.rc == 0 and fake.commands, res
    node.close()


@pytest.mark.parametrize("stale", ["other key type", "same key type"])
def test_a_refusal_names_the_global_file_and_its_fix_works(fake, tmp_path, stale):
    line = _rsa_line(tmp_path) if stale == "other key type" else " ".join(keygen(tmp_path / "old").split()[:2])
    name, glob, user, cfg = _setup(fake, tmp_path, line, user_pins_right_key=False)
    node = SSHNode("node1", fake.target, ssh_config=cfg, known_hosts=user, accept_new_host_keys=True)
    with pytest.raises(NodeError) as exc:
        node.run(["true"], timeout=10)
    msg = str(exc.value)
    assert "\n" not in msg and str(glob) in msg and fake.commands == []
    assert ("host key CHANGED" if stale == "same key type" else "host key refused") in msg, msg
    fix = f"ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(str(glob))}"
    assert fix in msg, msg
    subprocess.run(shlex.split(fix), check=True, capture_output=True)  # the operator follows the advice
    res = node.run(["true"], timeout=10)  # and reruns with --accept-new-host-keys
    assert res.rc == 0 and name in user.read_text()
    node.close()

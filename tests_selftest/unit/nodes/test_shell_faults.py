"""Login-shell and token faults, injected on an sshd node whose account's login shell is fish: crafted
argv, environment and secret values (backslash before a quote, `;`, `$( )`, backticks, `!`, newlines), an
`hf` path containing `=`, and HF_TOKEN, which must never appear in any process's command line on the node."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from modeldrop.download import DownloadPlan, run_hf_download
from modeldrop.nodes import _Exec, login_shell_text
from modeldrop.ssh import SSHNode
from tests_selftest.support.slots import SANDBOX_BASE
from tests_selftest.support.sshd_fixture import SSHD, SSHDHandle, start_sshd

pytestmark = pytest.mark.timeout(120)
FISH = shutil.which("fish")
CRAFTED = ["x\\", "; touch {m} #", "$(touch {m})", "`touch {m}`", "a'b", 'q"q', "!1", "multi\nline", "é ü", "-n", "k=v",
           "%self", "{a,b}", "~", "*"]


def _crafted(marker: Path) -> list[str]:
    return [c.replace("{m}", str(marker)) for c in CRAFTED]


def _admin(argv: list[str]) -> None:
    from sandbox.users import admin
    admin(argv)


@pytest.fixture(scope="module")
def fish_sshd(sandbox_slot: int) -> SSHDHandle:
    """An sshd on the slot's address range that logs in a user whose login shell is fish."""
    if not FISH or os.geteuid() != 0 or not os.access(SSHD, os.X_OK):
        pytest.skip("needs root, sshd and fish (apt-get install fish)")
    user, base = f"mdsb{sandbox_slot}fish", SANDBOX_BASE / f"fish{sandbox_slot}"
    home = base / "home"
    shutil.rmtree(base, ignore_errors=True)
    home.mkdir(parents=True)
    for d in (SANDBOX_BASE, base):
        d.chmod(0o755)
    try:
        pw = pwd.getpwnam(user)
        _admin(["usermod", "--home", str(home), "--shell", FISH, user])
    except KeyError:
        _admin(["useradd", "--home-dir", str(home), "--no-create-home", "--shell", FISH, "--user-group",
                "--password", "*", user])
        pw = pwd.getpwnam(user)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    handle = start_sshd(base / "sshd", addr=f"127.0.{10 + sandbox_slot}.250", user=user)
    (base / "sshd").chmod(0o755)
    handle.home = home
    yield handle
    handle.stop()
    subprocess.run(["userdel", user], check=False, capture_output=True)


@pytest.fixture
def fish_node(fish_sshd) -> SSHNode:
    n = SSHNode("node1", fish_sshd.alias, ssh_config=fish_sshd.ssh_config)
    yield n
    n.close()


def test_login_shell_is_fish(fish_node):
    assert fish_node.run(["/bin/sh", "-c", "getent passwd $(id -un) | cut -d: -f7"], timeout=20).stdout.strip() == FISH


@pytest.mark.fault("fish-login-shell-crafted-input", gate="node1_download", signature="verbatim")
def test_crafted_argv_env_and_secret_run_verbatim_under_fish(fish_node, fish_sshd):
    marker = fish_sshd.home / "pwned"
    args = _crafted(marker)
    res = fish_node.run(["/usr/bin/printf", "%s\\0", *args], timeout=20)
    assert res.rc == 0, res.stderr
    assert res.stdout.split("\0")[:-1] == args
    value = "v\\'; touch " + str(marker) + " #$(touch " + str(marker) + ")"
    res = fish_node.run(["/usr/bin/env"], env={"MD_CRAFTED": value}, secret_env={"HF_TOKEN": value + "!tok"},
                        unset_env=["HOME"], timeout=20)
    env = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    assert env["MD_CRAFTED"] == value and "HOME" not in env
    assert "HF_TOKEN" in env and res.stdout.count("***") >= 1  # the secret itself is redacted in the result
    assert not marker.exists()


@pytest.mark.parametrize("script", ["exec echo plain", "printf '%s\\n' 'a\\b' \"$X\" '!x' 'é'\nexit 3"])
def test_login_shell_text_means_the_same_in_every_shell(script, tmp_path):
    shells = [s for s in ("/bin/sh", "/bin/bash", "/usr/bin/zsh", FISH, "/usr/bin/tcsh", "/bin/csh") if s and
              os.access(s, os.X_OK)]
    want = subprocess.run(["/bin/sh", "-c", script], capture_output=True, env={"X": "x$y"})
    for shell in shells:
        got = subprocess.run([shell, "-c", login_shell_text(script)], capture_output=True, env={"X": "x$y"},
                             cwd=tmp_path)
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout), shell
    assert len(shells) >= 2


def test_script_reads_secrets_before_exec():
    cmd = _Exec.of(["/bin/hf", "download"], {"A": "1"}, ["B"], {"HF_TOKEN": "hf_secret"})
    script = cmd.sh_script()
    assert "hf_secret" not in script and "read -r HF_TOKEN" in script and script.endswith("exec /bin/hf download")
    assert cmd.stdin_prefix() == b"hf_secret\n"


FAKE_HF = """#!/usr/bin/python3
import json, os, sys, time
d = os.environ["MD_FAKE_DIR"]
with open(d + "/argv.json", "w") as f:
    json.dump({"argv": sys.argv, "token": os.environ.get("HF_TOKEN"), "pid": os.getpid()}, f)
deadline = time.monotonic() + 30
while not os.path.exists(d + "/go") and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"path": [a for a in sys.argv if a.startswith("--local-dir=")][0].split("=", 1)[1]}))
"""


def _cmdlines_holding(needle: bytes) -> list[str]:
    hits = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in raw:
            hits.append(f"{pid}: {raw[:200]!r}")
    return hits


def test_hf_path_with_equals_crafted_revision_and_token_off_the_command_line(fish_node, fish_sshd):
    home = fish_sshd.home
    fake_dir = home / "fake"
    hf = home / "bin=x" / "hf"
    for d in (fake_dir, hf.parent):
        d.mkdir(exist_ok=True)
        d.chmod(0o777)
    hf.write_text(FAKE_HF)
    hf.chmod(0o755)
    marker = home / "pwned"
    token = "hf_" + "Zq9" * 10
    revision = "x\\"
    local_dir = str(home / "model\\")
    box: dict = {}
    plan = DownloadPlan(str(hf), "org/m", local_dir, include=(f"; touch {marker} #",), revision=revision,
                        env={"MD_FAKE_DIR": str(fake_dir), "HF_TOKEN": token, "HF_ENDPOINT": "http://127.0.0.1:9"},
                        timeout_s=60, interval_s=5)
    worker = threading.Thread(target=lambda: box.update(res=run_hf_download(fish_node, plan, lambda _line: None)))
    worker.start()
    deadline = time.monotonic() + 30
    while not (fake_dir / "argv.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (fake_dir / "argv.json").exists(), "the fake hf never started"
    try:
        assert _cmdlines_holding(token.encode()) == []
    finally:
        (fake_dir / "go").write_text("")
        worker.join(60)
    import json
    seen = json.loads((fake_dir / "argv.json").read_text())
    assert seen["argv"] == [str(hf), "download", "org/m", f"--local-dir={local_dir}",
                            f"--include=; touch {marker} #", f"--revision={revision}", "--format", "json"]
    assert seen["token"] == token and not marker.exists()
    res = box["res"]
    assert res.rc == 0 and res.reported_path == local_dir and token not in res.stderr_tail + res.stdout_tail
    assert all(token not in str(e) for e in fish_node.transcript)


@pytest.mark.parametrize("script", ["echo a\n", "echo 'x\\'", "echo !!", "echo é", "echo a\tb", "echo plain"])
def test_login_shell_text_is_plain_ascii_without_history_or_fish_escapes(script):
    text = login_shell_text(script)
    assert all(32 <= ord(c) < 127 for c in text) and "!" not in text
    if "\\" in text:  # octal form: the only backslashes are printf escapes inside the quoted printf format
        assert text.startswith("/bin/sh -c 'eval \"$(printf \"\\") and "'" not in text[len("/bin/sh -c '"):-1]

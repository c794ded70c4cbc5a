"""The sandbox cluster: SSH nodes with strict host keys, per-node hf/exo paths, downloads, clean down().

Uses its own slots ("sbxtest" for SSH, "local" for local mode, support/slots.py) so it never touches the
shared `sandbox` fixture of conftest.py; the last SSH test tears its sandbox down and checks that
nothing it started is left.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxError
from sandbox.model import MODEL_ID
from sandbox.nodevenv import MARKER
from sandbox.procs import pid_matches, read_pid
from tests_selftest.support import REPO
from tests_selftest.support.slots import SANDBOX_BASE, slot

ENV_KEYS = {"MODEL_ID", "NODES", "HF_ENDPOINT", "EXO_API_PORT", "EXO_NAMESPACE", "SSH_CONFIG", "SSH_KNOWN_HOSTS",
            "PROFILE_PATH", "RUN_REPORT_DIR"}
PER_NODE = ("MODEL_DIR_NODE", "HF_CMD_NODE", "EXO_CMD_NODE", "EXO_LOG_DIR_NODE")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists(),
                                reason="SSH nodes need root and /usr/sbin/sshd")


def _env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def _uid_pids(uid: int) -> list[int]:
    """Live (not zombie) processes of `uid`."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
                if int(status.split("\nUid:")[1].split()[0]) == uid and "\nState:\tZ" not in status:
                    pids.append(int(d.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return pids


@pytest.fixture(scope="module")
def sbx() -> Iterator[Sandbox]:
    n = slot("sbxtest")
    s = Sandbox(SANDBOX_BASE / f"sbxtest-slot{n}", slot=n, n_nodes=2)
    t0 = time.monotonic()
    s.up()
    s.cold_up_s = time.monotonic() - t0  # type: ignore[attr-defined]
    yield s
    s.down()


def _ssh(sbx: Sandbox, k: int, *remote: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(sbx.ssh_config), "-o", "StrictHostKeyChecking=yes", *extra,
                           sbx.alias(k), *remote], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_env_file_has_every_key(sbx: Sandbox) -> None:
    env = _env(sbx.env_file)
    assert ENV_KEYS <= set(env)
    assert env["NODES"] == f"sbx{sbx.slot}-node1,sbx{sbx.slot}-node2" and env["MODEL_ID"] == MODEL_ID
    assert env["HF_ENDPOINT"] == f"http://127.0.{10 + sbx.slot}.1:8900"
    for k in (1, 2):
        for key in PER_NODE:
            assert f"{key}{k}" in env
        assert env[f"MODEL_DIR_NODE{k}"].endswith("/.local/share/exo/models/modeldrop--tiny-llama-sbx")
    assert env["HF_CMD_NODE1"] != env["HF_CMD_NODE2"] and env["EXO_CMD_NODE1"] != env["EXO_CMD_NODE2"]
    assert json.loads(Path(env["PROFILE_PATH"]).read_text()) == {"models": {}}


def test_ssh_works_with_strict_host_key_checking(sbx: Sandbox) -> None:
    for k in (1, 2):
        r = _ssh(sbx, k, "id", "-un")
        assert r.returncode == 0 and r.stdout.strip() == sbx.node_user(k), r.stderr
        r = _ssh(sbx, k, "command -v hf || command -v exo || echo none-on-path")
        assert r.stdout.strip() == "none-on-path", "tools are found by absolute path only"


def test_nodes_ssh_to_each_other_as_the_guide_has_it(sbx: Sandbox) -> None:
    """Node 1's user logs in to node 2 at its address with its own key and known_hosts, host keys checked."""
    for k, j in ((1, 2), (2, 1)):
        r = _ssh(sbx, k, "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5",
                 "-p", "22", f"{sbx.node_user(j)}@{sbx.address(j)}", "id", "-un")
        assert r.returncode == 0 and r.stdout.strip() == sbx.node_user(j), r.stderr


def test_unknown_host_key_is_refused(sbx: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "empty_known_hosts").write_text("")
    r = _ssh(sbx, 1, "true", extra=("-o", f"UserKnownHostsFile={tmp_path / 'empty_known_hosts'}"))
    assert r.returncode == 255 and "Host key verification failed" in r.stderr


def test_paramiko_connects_through_the_config(sbx: Sandbox) -> None:
    import paramiko

    host = paramiko.SSHConfig.from_path(str(sbx.ssh_config)).lookup(sbx.alias(2))
    client = paramiko.SSHClient()
    client.load_host_keys(str(sbx.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host["hostname"], port=int(host["port"]), username=host["user"],
                   key_filename=host["identityfile"][0], look_for_keys=False, allow_agent=False, timeout=5)
    try:
        _, out, _ = client.exec_command("echo $HOME")
        assert out.read().decode().strip() == str(sbx.node_home(2))
    finally:
        client.close()


@pytest.mark.sandbox_run
def test_each_node_hf_downloads_into_its_model_dir(sbx: Sandbox) -> None:
    reference = sorted(p.relative_to(sbx.root / "model").as_posix() for p in (sbx.root / "model").iterdir())
    for n in sbx.nodes():
        sbx.reset_node_files(n.k)
        r = sbx.run_on(n.k, [str(n.hf_cmd), "download", MODEL_ID, "--local-dir", str(n.model_dir),
                             "--format", "json"], env={"HF_ENDPOINT": sbx.hub.url, "HF_HUB_DISABLE_XET": "1"})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["path"] == str(n.model_dir)
        got = sorted(p.name for p in n.model_dir.iterdir() if p.name != ".cache")
        assert got == reference
        assert n.model_dir.stat().st_uid == pwd.getpwnam(n.user).pw_uid
        assert (n.home / ".cache/huggingface").is_dir(), "hf wrote its cache in the node's own home"


def test_populate_and_reset_node_files(sbx: Sandbox) -> None:
    n = sbx.node(2)
    sbx.populate_model(2)
    assert (n.model_dir / "model-00003-of-00003.safetensors").exists()
    assert list((n.model_dir / ".cache/huggingface/download").glob("*.metadata"))
    assert n.model_dir.stat().st_uid == pwd.getpwnam(n.user).pw_uid
    elsewhere = sbx.populate_model(2, n.home / "Models" / n.model_dir.name)
    assert (elsewhere / "config.json").exists() and (n.home / "Models").stat().st_uid == n.model_dir.stat().st_uid
    shutil.rmtree(n.home / "Models")
    sbx.reset_node_files(2)
    assert not n.model_dir.exists() and n.model_dir.parent.is_dir()
    r = _ssh(sbx, 2, "touch", str(n.model_dir.parent / "w"), "&&", "rm", str(n.model_dir.parent / "w"))
    assert r.returncode == 0, "the model dir's parent is writable by the node user"


def test_emulator_config_controls_and_no_card(sbx: Sandbox) -> None:
    cfg = json.loads(sbx.node(1).emulator_config.read_text())
    assert cfg["generation"] == "new" and cfg["version"] == "0.3.70" and cfg["layout"] == "linux"
    assert cfg["node_address"] == sbx.address(1) and cfg["peer_addresses"] == [sbx.address(1), sbx.address(2)]
    sbx.set_exo_generation("old")
    sbx.set_exo_faults(2, {"isolated": True})
    old = [json.loads(n.emulator_config.read_text()) for n in sbx.nodes()]
    assert [c["version"] for c in old] == ["1.0.71", "1.0.71"] and old[1]["faults"] == {"isolated": True}
    sbx.set_exo_generation("new")
    sbx.set_exo_faults(2, {})
    # no card is pre-installed: EXO meets the model as a new drop and the canary adds its card
    cards = sbx.node_home(1) / ".local/share/exo/custom_model_cards"
    assert cards.is_dir() and not (cards / "modeldrop--tiny-llama-sbx.toml").exists()


def test_exo_wrapper_reaches_the_emulator(sbx: Sandbox) -> None:
    if not (sbx.root / "lib/exo_emulator/__main__.py").exists():
        pytest.skip("sandbox/exo_emulator is not there yet")
    r = _ssh(sbx, 2, str(sbx.node(2).exo_cmd), "--help")
    out = r.stdout + r.stderr
    # the wrapper's job: the node user runs the venv's python on the copied package with its config
    assert "No module named 'exo_emulator'" not in out and "Permission denied" not in out, out[-800:]
    assert "/lib/exo_emulator/" in out or r.returncode == 0, out[-800:]


def test_second_up_is_fast_and_keeps_processes(sbx: Sandbox) -> None:
    """A second up() rebuilds and restarts nothing (what makes it fast): the same sshd and hub processes, and
    the model, its reference download and the node venv untouched. Its time is printed, not asserted."""
    def processes() -> list[int | None]:
        return [read_pid(sbx.root / f"node{k}/sshd.pid") for k in (1, 2)] + [read_pid(sbx.hub_dir / "hub.pid")]

    def built() -> dict[str, tuple[int, int]]:
        paths = [sbx.root / "model.json", sbx.reference_dir, sbx.venv_dir / MARKER]
        return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}

    pids, before = processes(), built()
    t0 = time.monotonic()
    sbx.up()
    print(f"MEASURE warm up(): {time.monotonic() - t0:.1f}s (cold: {sbx.cold_up_s:.1f}s)")  # type: ignore[attr-defined]
    assert None not in pids and processes() == pids
    assert built() == before


def test_cli_status_and_env(sbx: Sandbox) -> None:
    cli = [sys.executable, "-m", "sandbox"]
    cwd = REPO
    r = subprocess.run([*cli, "status", "--root", str(sbx.root)], capture_output=True, text=True, cwd=cwd, timeout=30)
    status = json.loads(r.stdout)
    assert r.returncode == 0 and status["hub"]["alive"] and all(n["alive"] for n in status["nodes"])
    r = subprocess.run([*cli, "env", "--root", str(sbx.root)], capture_output=True, text=True, cwd=cwd, timeout=30)
    assert r.stdout.strip() == str(sbx.env_file)
    r = subprocess.run([*cli, "env", "--root", str(sbx.root / "nowhere")], capture_output=True, text=True,
                       cwd=cwd, timeout=30)
    assert r.returncode == 1 and "python -m sandbox up" in r.stderr


@pytest.mark.sandbox_run
def test_down_leaves_no_process_behind(sbx: Sandbox) -> None:
    # a stray background process on node 1, as a launched exo would be
    r = _ssh(sbx, 1, "nohup setsid sleep 300 >/dev/null 2>&1 </dev/null & echo started")
    assert r.stdout.strip() == "started"
    uids = [pwd.getpwnam(sbx.node_user(k)).pw_uid for k in (1, 2)]
    assert _uid_pids(uids[0]), "the stray process runs as the node user"
    sshd = [read_pid(sbx.root / f"node{k}/sshd.pid") for k in (1, 2)]
    hub_pid = sbx.hub.pid
    try:
        stopped = sbx.down()
        assert any("hub" in s for s in stopped) and sum("sshd pid" in s for s in stopped) == 2, stopped
        assert not any(_uid_pids(u) for u in uids)
        assert not any(pid_matches(p, ["sshd"]) for p in sshd) and not pid_matches(hub_pid, ["sandbox.hub"])
        assert _ssh(sbx, 1, "true").returncode == 255
        assert sbx.down() == [], "a second down() finds nothing to stop"
    finally:
        sbx.up()  # the module's sandbox, for the tests after this one (the self-tests run whole runs first)


@pytest.mark.sandbox_run
def test_local_mode_one_node() -> None:
    n = slot("local")
    with pytest.raises(SandboxError, match="Only 1 local node"):
        Sandbox(SANDBOX_BASE / f"sbxtest-slot{n}", slot=n, n_nodes=2, mode="local")
    s = Sandbox(SANDBOX_BASE / f"sbxtest-slot{n}", slot=n, n_nodes=1, mode="local")
    try:
        env = _env(s.up())
        assert env["NODES"] == "local" and "SSH_CONFIG" not in env
        n = s.node(1)
        s.reset_node_files(1)
        r = subprocess.run([str(n.hf_cmd), "download", MODEL_ID, "--local-dir", str(n.model_dir), "--quiet"],
                           env={**os.environ, "HF_ENDPOINT": s.hub.url, "HF_HUB_DISABLE_XET": "1"},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert (n.model_dir / "config.json").exists() and (n.home / ".cache/huggingface").is_dir()
    finally:
        assert any("hub" in line for line in s.down())

"""More rows of the fault matrix, as whole runs against the file-gate sandbox: SSH (refused, wedged
before the banner, auth failure, changed host key), tools (exo missing, hf not executable), files
(config.json gone) and hub (a listed file the hub cannot serve).

Each run must fail at the named gate with the named evidence and run nothing after it; the fault
harness (tests_selftest/support/fault_plugin.py) adds processes left, decoys harmed and results lost.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests_selftest.support.file_runs import assert_caught, node_dir, run

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(600)]


@pytest.fixture
def files_box(clean):
    """The file-gate sandbox, clean (runs/conftest.py's `clean`)."""
    return clean


def node2_target(sbx, user: str | None = None, port: int | None = None) -> str:
    """Node 2's alias with another user and/or port: everything else from the sandbox's ssh_config."""
    return f"{user or sbx.node_user(2)}@{sbx.alias(2)}" + (f":{port}" if port else "")


def run_nodes(sbx, reports: Path, node2: str, **kw):
    """A run whose node 2 is `node2` (node 1 unchanged)."""
    return run(sbx, reports, "--nodes", f"{sbx.alias(1)},{node2}", **kw)


def free_port(host: str) -> int:
    """A port on host with no listener (bound and released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.mark.fault("ssh-refused", gate="preflight", signature="cannot connect")
def test_ssh_connection_refused_fails_preflight(files_box):
    sbx, reports = files_box
    port = free_port(sbx.address(2))
    result = run_nodes(sbx, reports, node2_target(sbx, port=port))
    assert_caught(result, "preflight", "node2", f"{sbx.address(2)}:{port}", "cannot connect")


@pytest.mark.fault("ssh-wedged-before-banner", gate="preflight", signature="node2")
def test_sshd_that_accepts_and_never_speaks_fails_preflight(files_box):
    sbx, reports = files_box
    wedged = socket.socket()
    wedged.bind((sbx.address(2), 0))
    wedged.listen(4)  # the kernel accepts connections; nothing ever answers
    try:
        result = run_nodes(sbx, reports, node2_target(sbx, port=wedged.getsockname()[1]))
    finally:
        wedged.close()
    assert_caught(result, "preflight", "node2", "sent no SSH banner within")
    assert "cannot probe exo" not in result.message("preflight")  # one connect per unreachable node, not three


@pytest.mark.fault("ssh-auth-failure", gate="preflight", signature="node2")
def test_ssh_auth_failure_fails_preflight(files_box):
    sbx, reports = files_box
    result = run_nodes(sbx, reports, node2_target(sbx, user=sbx.node_user(1)))  # not allowed on node 2
    assert_caught(result, "preflight", "node2")
    assert "auth" in result.message("preflight").lower(), result.message("preflight")


@pytest.mark.fault("ssh-host-key-changed", gate="preflight", signature="node2")
def test_changed_host_key_fails_preflight(files_box, tmp_path):
    sbx, reports = files_box
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = other.with_suffix(".pub").read_text().split()[:2]
    lines = []
    for line in Path(sbx.known_hosts).read_text().splitlines():
        hosts, _, _ = line.partition(" ")
        lines.append(f"{hosts} {' '.join(fake)}" if sbx.address(2) in hosts.split(",") else line)
    pinned = tmp_path / "known_hosts"
    pinned.write_text("\n".join(lines) + "\n")
    # every file that applies pins the other key (a right key in any of them passes, as with OpenSSH)
    cfg = tmp_path / "ssh_config"
    cfg.write_text(Path(sbx.ssh_config).read_text().replace(str(sbx.known_hosts), str(pinned)))
    result = run(sbx, reports, "--accept-new-host-keys",
                 extra_env={"SSH_KNOWN_HOSTS": str(pinned), "SSH_CONFIG": str(cfg)})
    assert_caught(result, "preflight", "node2")
    assert "host key" in result.message("preflight").lower(), result.message("preflight")


@pytest.mark.fault("exo-missing-node2", gate="preflight", signature="not found")
def test_exo_missing_on_node2_fails_preflight(files_box):
    sbx, reports = files_box
    exo = node_dir(sbx, 2, "EXO_CMD_NODE")
    hidden = exo.with_name(exo.name + ".hidden")
    exo.rename(hidden)
    try:
        result = run(sbx, reports)
    finally:
        hidden.rename(exo)
    assert_caught(result, "preflight", "node2", str(exo))


@pytest.mark.fault("hf-not-executable-node1", gate="preflight", signature="node1")
def test_hf_not_executable_fails_preflight(files_box):
    sbx, reports = files_box
    hf = node_dir(sbx, 1, "HF_CMD_NODE")
    mode = hf.stat().st_mode
    os.chmod(hf, mode & ~0o111)
    try:
        result = run(sbx, reports)
    finally:
        os.chmod(hf, mode)
    assert_caught(result, "preflight", "node1", str(hf))


@pytest.mark.fault("config-json-missing", gate="node1_verify", signature="config.json")
def test_config_json_missing_fails_node1_verify(files_box):
    sbx, reports = files_box
    sbx.populate_model(1)
    (node_dir(sbx, 1) / "config.json").unlink()
    result = run(sbx, reports, "--audit")
    assert_caught(result, "node1_verify", "config.json")


@pytest.mark.fault("hub-file-404", gate="node1_download", signature="not found")
def test_hub_that_cannot_serve_a_listed_file_fails_node1_download(files_box):
    sbx, reports = files_box
    sbx.hub.set_faults({"missing_file": ["model-00002-of-00003.safetensors"]})
    result = run(sbx, reports)
    assert_caught(result, "node1_download")
    assert "not found" in result.message("node1_download").lower(), result.message("node1_download")


@pytest.mark.fault("gate-timeout-mid-download", gate="node1_download", signature="Timeout")
def test_gate_timeout_mid_download_stops_the_remote_hf_at_once(files_box):
    sbx, reports = files_box
    sbx.hub.set_faults({"slow_link_bps": 20_000})  # ~80 s for the model: the gate's limit fires first
    result = run(sbx, reports, "-o", "modeldrop_gate_timeouts=download=15")
    assert_caught(result, "node1_download", "Timeout")

"""A throwaway OpenSSH sshd for the node tests: key-only, its own 127.0.x.y address and port, no AcceptEnv.

`start_sshd(workdir)` generates a host key and a client key, writes sshd_config, ssh_config (alias
`mdtest`) and known_hosts, starts `/usr/sbin/sshd -D` as our child and waits (polling, with a deadline)
until it accepts connections. `SSHD.stop()` terminates it by its pid. It logs in as the current user
(root here: its shadow entry is `*`, not locked) with `AuthorizedKeysFile` pointing into workdir, so no
account or home is touched.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class SSHDHandle:
    """A running test sshd and the client-side files that reach it."""

    proc: subprocess.Popen
    addr: str
    port: int
    user: str
    key: Path
    host_pub: str
    known_hosts: Path
    ssh_config: Path
    alias: str
    log: Path

    @property
    def target(self) -> str:
        """user@addr:port."""
        return f"{self.user}@{self.addr}:{self.port}"

    def stop(self) -> None:
        """Terminate the sshd we started (by pid) and reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port(addr: str) -> int:
    """A TCP port free on addr right now."""
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def _wait_listening(addr: str, port: int, proc: subprocess.Popen, log: Path, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited rc {proc.returncode}: {log.read_text()[-2000:] if log.exists() else ''}")
        try:
            with socket.create_connection((addr, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {addr}:{port} within {seconds}s")


def keygen(path: Path) -> str:
    """An ed25519 key pair at path (+ .pub); returns the public line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def start_sshd(workdir: Path, addr: str | None = None, user: str | None = None, extra_config: str = "") -> SSHDHandle:
    """Start a private sshd in workdir (see the module docstring); `user` logs in instead of the current
    one (workdir must then be readable by that user); `extra_config` lines are added to sshd_config."""
    workdir.mkdir(parents=True, exist_ok=True)
    addr = addr or f"127.0.99.{10 + os.getpid() % 200}"
    port = free_port(addr)
    user = user or getpass.getuser()
    host_pub = keygen(workdir / "host_ed25519")
    client_pub = keygen(workdir / "client_ed25519")
    (workdir / "authorized_keys").write_text(client_pub + "\n")
    os.chmod(workdir / "authorized_keys", 0o600 if user == getpass.getuser() else 0o644)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    cfg = workdir / "sshd_config"
    cfg.write_text(f"""ListenAddress {addr}
Port {port}
HostKey {workdir / 'host_ed25519'}
PidFile {workdir / 'sshd.pid'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowUsers {user}
AuthorizedKeysFile {workdir / 'authorized_keys'}
MaxSessions 20
LogLevel VERBOSE
{extra_config}""")
    log = workdir / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-f", str(cfg), "-E", str(log)], stdin=subprocess.DEVNULL)
    try:
        _wait_listening(addr, port, proc, log)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise
    kh = workdir / "known_hosts"
    kh.write_text(f"[{addr}]:{port} {' '.join(host_pub.split()[:2])}\n")
    alias = "mdtest"
    ssh_config = workdir / "ssh_config"
    ssh_config.write_text(f"""Host {alias}
    HostName {addr}
    Port {port}
    User {user}
    IdentityFile {workdir / 'client_ed25519'}
    UserKnownHostsFile {kh}
    StrictHostKeyChecking yes
""")
    return SSHDHandle(proc, addr, port, user, workdir / "client_ed25519", host_pub, kh, ssh_config, alias, log)

"""Node users and SSH: one user, home and sshd per node, one client key, ssh_config and known_hosts.

Contract: `pick_mode(asked, n_nodes)` is `ssh` where this machine can run SSH nodes (root, OpenSSH's
sshd, an ssh client), else `local` with a note saying why (one local node only: more raise
SandboxError). `ensure_user` creates or fixes node k's user (password field `*`, shell /bin/sh, home
under the root); `ensure_sshd` (re)starts node k's own sshd on its address, key-only with
`AllowUsers` that user, when it is not running with the current config. `stop_sshds` stops the sshds
a state file names and the sessions they forked, each by pid after checking its command line.
User changes retry while another process holds the passwd lock.
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from sandbox.layout import HOMEBREW_PREFIX, Layout, NodeInfo, SandboxError, write_file
from sandbox.procs import cmdline, descendants, pid_matches, processes, read_pid, stop_pid, wait_until

log = logging.getLogger("sandbox")

SSHD = "/usr/sbin/sshd"


def pick_mode(mode: str, n_nodes: int) -> tuple[str, str]:
    """(`ssh` | `local`, note): `auto` is ssh where possible; `ssh` where it is not is a SandboxError."""
    why = []
    if os.geteuid() != 0:
        why.append("not root (users and port 22 need root)")
    if not Path(SSHD).exists():
        why.append(f"no {SSHD} (apt-get install openssh-server)")
    if not shutil.which("ssh"):
        why.append("no ssh client")
    if mode == "ssh" and why:
        raise SandboxError("SSH nodes are not possible here: " + "; ".join(why))
    if mode == "local" or (mode == "auto" and why):
        note = ("local nodes: " + ("; ".join(why) if why else "asked for")
                + ". Only 1 local node is supported (local nodes share one home).")
        if n_nodes > 1:
            log.error("%s Asked for %d local nodes.", note, n_nodes)
            raise SandboxError(f"{note} Asked for {n_nodes}; use --nodes 1 or run as root with sshd.")
        return "local", note
    if mode not in ("auto", "ssh"):
        raise SandboxError(f"mode must be auto, ssh or local, got {mode!r}")
    return "ssh", ""


# -- users ---------------------------------------------------------------------------------------------
def admin(argv: list[str], timeout: float = 30.0) -> None:
    """Run useradd/usermod/userdel; retry while another process holds the passwd lock."""
    def attempt() -> bool:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode == 0:
            return True
        if "lock" in r.stderr.lower():
            return False
        raise SandboxError(f"{' '.join(argv)} failed (rc {r.returncode}): {r.stderr.strip()}")

    wait_until(attempt, timeout, f"{argv[0]} to get the passwd lock", interval=0.2)


def spwd_field(user: str) -> str | None:
    """The password field of `user` in /etc/shadow (None when absent)."""
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == user:
                return rest.split(":", 1)[0]
    except OSError:
        pass
    return None


def owner(lay: Layout, k: int) -> tuple[int, int]:
    """(uid, gid) of node k's user (KeyError when it does not exist)."""
    pw = pwd.getpwnam(lay.node_user(k))
    return pw.pw_uid, pw.pw_gid


def ensure_user(lay: Layout, n: NodeInfo) -> tuple[int, int]:
    """Create or fix the node user; returns (uid, gid)."""
    if lay.mode == "local":
        return os.geteuid(), os.getegid()
    try:
        pw = pwd.getpwnam(n.user)
    except KeyError:
        admin(["useradd", "--home-dir", str(n.home), "--no-create-home", "--shell", "/bin/sh",
               "--user-group", "--password", "*", "--comment", f"modeldrop sandbox {n.alias}", n.user])
        pw = pwd.getpwnam(n.user)
    if pw.pw_dir != str(n.home) or pw.pw_shell != "/bin/sh":
        # the slot's users are machine-wide: another root used this slot before
        admin(["usermod", "--home", str(n.home), "--shell", "/bin/sh", n.user])
    if spwd_field(n.user) != "*":
        admin(["usermod", "--password", "*", n.user])
    return pw.pw_uid, pw.pw_gid


def delete_users(lay: Layout) -> None:
    """Delete the node users that exist (SSH mode)."""
    if lay.mode != "ssh":
        return
    for k in range(1, lay.n_nodes + 1):
        try:
            pwd.getpwnam(lay.node_user(k))
        except KeyError:
            continue
        admin(["userdel", lay.node_user(k)])


# -- keys and client files -----------------------------------------------------------------------------
def _ensure_key(path: Path, comment: str) -> None:
    """An ed25519 key pair at `path` (made once, private part 0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True)
    path.chmod(0o600)


def ensure_client_key(lay: Layout) -> None:
    """The client key every node authorizes, and the node key the nodes log in to each other with (made once)."""
    _ensure_key(lay.client_key, f"modeldrop-sbx{lay.slot}")
    _ensure_key(lay.node_key, f"modeldrop-sbx{lay.slot}-nodes")


def write_node_ssh(lay: Layout, n: NodeInfo) -> None:
    """Node k's `~/.ssh`: authorized_keys (the client key and the node key), and what the guide's "SSH works both
    ways" needs on a node: the node key as its identity and every node's host key in its known_hosts (by address,
    the way the control host names the nodes)."""
    ssh_dir = n.home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = [Path(f"{key}.pub").read_text() for key in (lay.client_key, lay.node_key)]
    write_file(ssh_dir / "authorized_keys", "".join(keys), 0o600)
    write_file(ssh_dir / "id_ed25519", lay.node_key.read_text(), 0o600)
    write_file(ssh_dir / "known_hosts", "".join(known_host_line(lay, m, m.address) for m in lay.nodes()), 0o644)


def known_host_line(lay: Layout, n: NodeInfo, names: str) -> str:
    """`<names> <type> <key>` for node k's host key (names: comma-separated aliases and addresses)."""
    kind, key = Path(f"{host_key(lay, n.k)}.pub").read_text().split()[:2]
    return f"{names} {kind} {key}\n"


def host_key(lay: Layout, k: int) -> Path:
    """Node k's sshd host key (made once)."""
    key = lay.node_dir(k) / "ssh_host_ed25519_key"
    _ensure_key(key, f"sbx{lay.slot}-node{k}")
    return key


def write_ssh_files(lay: Layout) -> None:
    """`ssh_config` (an alias per node, StrictHostKeyChecking yes) and `known_hosts` (each node's host key)."""
    cfg = [f"# modeldrop sandbox slot {lay.slot}: generated by `python -m sandbox up`; do not edit\n"]
    hosts = []
    for n in lay.nodes():
        cfg.append(f"Host {n.alias}\n  HostName {n.address}\n  User {n.user}\n  Port 22\n"
                   f"  IdentityFile {lay.client_key}\n  IdentitiesOnly yes\n"
                   f"  UserKnownHostsFile {lay.known_hosts}\n  StrictHostKeyChecking yes\n"
                   f"  BatchMode yes\n  ConnectTimeout 5\n  LogLevel ERROR\n\n")
        hosts.append(known_host_line(lay, n, f"{n.alias},{n.address}"))
    write_file(lay.ssh_config, "".join(cfg))
    write_file(lay.known_hosts, "".join(hosts))


def ssh_argv(lay: Layout, k: int, argv: list[str]) -> list[str]:
    """`ssh -F ssh_config alias -- <argv joined for the remote shell>` (local: argv itself)."""
    if lay.mode == "local":
        return list(argv)
    return ["ssh", "-F", str(lay.ssh_config), lay.alias(k), "--", shlex.join(argv)]


# -- sshd ----------------------------------------------------------------------------------------------
def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def sshd_config(lay: Layout, n: NodeInfo, homebrew: Path | None = None) -> str:
    """Node k's sshd_config: its address, port 22, key-only, only its user (and, as a comment, the dir it sees at
    /opt/homebrew: a change of it restarts the sshd in its own mount namespace)."""
    ndir = lay.node_dir(n.k)
    mounts = f"# {HOMEBREW_PREFIX} of this node: {homebrew} (own mount namespace)\n" if homebrew else ""
    return (f"# sshd of sandbox node {n.k} ({n.alias})\n{mounts}ListenAddress {n.address}\nPort 22\n"
            f"HostKey {host_key(lay, n.k)}\nPidFile {ndir / 'sshd.pid'}\n"
            "AuthorizedKeysFile .ssh/authorized_keys\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n"
            f"UsePAM no\nAllowUsers {n.user}\nStrictModes yes\nPrintMotd no\nPrintLastLog no\n"
            "AcceptEnv LANG LC_*\nMaxSessions 32\nMaxStartups 64:30:128\n"
            "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n")


def sshd_pid(lay: Layout, k: int) -> int | None:
    """The pid node k's sshd wrote (not checked)."""
    return read_pid(lay.node_dir(k) / "sshd.pid")


def sshd_alive(lay: Layout, k: int) -> bool:
    """True when node k's pid file names a live sshd of its config."""
    return pid_matches(sshd_pid(lay, k), ["sshd", str(lay.sshd_config_path(k))])


def sshd_argv(cfg: Path, log: Path, homebrew: Path | None) -> list[str]:
    """sshd on its config; with `homebrew`, in a mount namespace of its own where that dir is /opt/homebrew (so
    every session and process of the node sees its own /opt/homebrew/bin/exo, as on a Mac with Homebrew)."""
    argv = [SSHD, "-f", str(cfg), "-E", str(log)]
    if homebrew is None:
        return argv
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(homebrew), str(HOMEBREW_PREFIX), *argv]


def ensure_sshd(lay: Layout, n: NodeInfo, homebrew: Path | None = None) -> None:
    """Start node k's sshd, or restart it when its config changed; wait until it listens. With `homebrew` the
    node sees that dir at /opt/homebrew (`sshd_argv`; /opt/homebrew is made, empty, as the mount point)."""
    ndir = lay.node_dir(n.k)
    cfg = lay.sshd_config_path(n.k)
    text = sshd_config(lay, n, homebrew)
    changed = not cfg.exists() or cfg.read_text() != text
    write_file(cfg, text, 0o600)
    pid = read_pid(ndir / "sshd.pid")
    needles = ["sshd", str(cfg)]
    if pid_matches(pid, needles) and not changed:
        return
    stop_pid(pid, needles)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    if homebrew is not None:
        HOMEBREW_PREFIX.mkdir(mode=0o755, parents=True, exist_ok=True)
    r = subprocess.run(sshd_argv(cfg, ndir / "sshd.log", homebrew), capture_output=True, text=True)
    if r.returncode != 0:
        tail = (ndir / "sshd.log").read_text(errors="replace")[-1500:] if (ndir / "sshd.log").exists() else ""
        raise SandboxError(f"sshd for node {n.k} failed (rc {r.returncode}): {r.stderr}{tail}")
    wait_until(lambda: pid_matches(read_pid(ndir / "sshd.pid"), needles) and _tcp_open(n.address, 22),
               10, f"sshd of node {n.k} to listen on {n.address}:22")


def sshd_state(lay: Layout) -> dict[str, dict[str, Any]]:
    """{k: {pid, config}} of every node's sshd, as the state file keeps it (SSH mode)."""
    if lay.mode != "ssh":
        return {}
    return {str(n.k): {"pid": sshd_pid(lay, n.k), "config": str(lay.sshd_config_path(n.k))} for n in lay.nodes()}


def stop_sshds(recorded: dict[str, dict[str, Any]]) -> list[str]:
    """Stop each recorded sshd that still is one, and the sessions it forked; one line per process stopped."""
    stopped: list[str] = []
    for k_str, rec in sorted(recorded.items()):
        pid, needles = rec.get("pid"), ["sshd", rec.get("config", "?")]
        if pid_matches(pid, needles):
            sessions = descendants(pid, processes())
            if stop_pid(pid, needles):
                stopped.append(f"node{k_str} sshd pid {pid}")
            for s in sessions:
                line = cmdline(s)
                if line and line.startswith("sshd:") and stop_pid(s, [line]):
                    stopped.append(f"node{k_str} ssh session pid {s}")
    return stopped

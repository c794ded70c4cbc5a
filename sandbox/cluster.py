"""The sandbox cluster: N (1-4) SSH nodes on loopback, the fake hub, and an env file for the suite.

Contract of `Sandbox(root, slot, n_nodes)`:
- `up()` builds or refreshes, idempotently (seconds when warm), and returns the env file path:
  per node k a user `mdsb{slot}n{k}` (password field `*`) with its own home, its own sshd on
  `127.0.{10+slot}.{10+k}:22` (key-only, AllowUsers, own host key and pid file), the `hf` CLI
  and the EXO emulator as wrapper scripts at a different absolute path per node (nothing on
  PATH), exo's Linux layout (`~/.local/share/exo/{models,custom_model_cards}`), an
  `emulator.json`; one client key, `ssh_config` (aliases `sbx{slot}-node{k}`) and
  `known_hosts`; the hub on `127.0.{10+slot}.1:<hub_port>` with the tiny model published;
  `model_drop.env`, `model_profiles.json` (if absent) and the reports dir.
  Hub and node fault switches (and emulator timing overrides) are cleared by `up()`.
- `down()` stops exactly what the sandbox started (sshd listeners and their sessions, the
  node users' processes, emulator processes of this sandbox, the hub), each by pid after
  checking /proc/<pid>/cmdline (or environ) still names it. Never by process name.
- Without root or /usr/sbin/sshd the nodes are `local` (one node only; more raises
  SandboxError); `note` says why.
Layout under root: `node{k}/{home,sshd_config,ssh_host_ed25519_key,sshd.pid,sshd.log,
emulator.json}`, `lib/exo_emulator`, `model/`, `hub/{repos,requests.jsonl,hub.pid}`,
`reference/` (a complete `hf download` for `populate_model`), `sandbox.json` (state).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import MAX_SLOT
from sandbox import hub as hubmod
from sandbox.model import MODEL_ID, folder_name, generate_model
from sandbox.nodevenv import DEFAULT_VENV, NODE_REQUIREMENTS, ensure_node_venv
from sandbox.procs import cmdline, is_zombie, pid_matches, read_pid, stop_pid, wait_until

log = logging.getLogger("sandbox")

SSHD = "/usr/sbin/sshd"
EXO_API_PORT = 52415
DEFAULT_HUB_PORT = 8900
EMULATOR_SRC = Path(__file__).resolve().parent / "exo_emulator"
GENERATIONS = {"new": "0.3.70", "old": "1.0.71"}
RAM_TOTAL, RAM_AVAILABLE = 17179869184, 12884901888
# Where each node's tools live, relative to its home: different per node, like real installs.
HF_PATHS = {1: ".local/bin/hf", 2: "homebrew/bin/hf", 3: "miniforge3/bin/hf", 4: "Library/Python/3.11/bin/hf"}
EXO_PATHS = {1: "exo/.venv/bin/exo", 2: "Applications/EXO.app/Contents/Resources/exo/exo",
             3: "src/exo/.venv/bin/exo", 4: "opt/exo/bin/exo"}



def exo_entry_point(python: Path, k: int, env: dict[str, str]) -> str:
    """node k's `exo`: a console-script entry point like a pip/uv-installed exo (`#!<venv python>`), so the
    process is `<python> <path of exo> args…` as on a real node. It sets the node's identity in its
    environment once and re-executes itself, so the variables are visible in the process environ."""
    return "\n".join([
        f"#!{python}",
        f"# exo of sandbox node {k}: the EXO emulator (sandbox/exo_emulator), installed like a console script",
        "import os, sys",
        f"NODE_ENV = {json.dumps(env)}",
        "if __name__ == '__main__':",
        "    if os.environ.get('EXO_EMULATOR_CONFIG') != NODE_ENV['EXO_EMULATOR_CONFIG']:",
        "        os.environ.update(NODE_ENV)",
        "        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]])",
        "    sys.path.insert(0, NODE_ENV['PYTHONPATH'])",
        "    from exo_emulator.cli import main",
        "    sys.exit(main())",
        ""])

class SandboxError(RuntimeError):
    """The sandbox cannot be built as asked; the message says why and what to do."""


EXO_CHOICES = ("auto", "real", "emulator")


def pick_exo(asked: str, generation: str) -> tuple[str, str]:
    """("real" | "emulator", note): `auto` is real EXO where this machine can build it, else the emulator
    with a one-line note saying what is missing; `real` where it cannot is a SandboxError."""
    if asked not in EXO_CHOICES:
        raise SandboxError(f"exo must be one of {', '.join(EXO_CHOICES)}, got {asked!r}")
    if asked == "emulator":
        return "emulator", ""
    from sandbox.exo_real.install import missing_inputs
    missing = missing_inputs(generation)
    if not missing:
        return "real", ""
    line = f"real EXO ({generation}) is not available here (missing {'; '.join(missing)})"
    if asked == "real":
        raise SandboxError(line + "; use the emulator (--sandbox-exo emulator)")
    return "emulator", line + ": using the EXO emulator"


def default_root(slot: int) -> Path:
    """`/var/tmp/modeldrop-sandbox/slot{S}`: world-traversable, survives reboots of the shell."""
    return Path("/var/tmp/modeldrop-sandbox") / f"slot{slot}"


@dataclass(frozen=True)
class NodeInfo:
    """Everything the suite and tests need about node k."""

    k: int
    alias: str
    user: str
    address: str
    home: Path
    hf_cmd: Path
    exo_cmd: Path
    model_dir: Path
    log_dir: Path
    emulator_config: Path


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write atomically (temp + replace) with `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    """chown -R without following symlinks."""
    if not path.exists():
        return
    os.chown(path, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _admin(argv: list[str], timeout: float = 30.0) -> None:
    """Run useradd/usermod/userdel; retry while another process holds the passwd lock."""
    def attempt() -> bool:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode == 0:
            return True
        if "lock" in r.stderr.lower():
            return False
        raise SandboxError(f"{' '.join(argv)} failed (rc {r.returncode}): {r.stderr.strip()}")

    wait_until(attempt, timeout, f"{argv[0]} to get the passwd lock", interval=0.2)


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, uid) of every process."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            uid = (d / "status").read_text().split("\nUid:")[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
        out.append((int(d.name), int(stat.rsplit(")", 1)[1].split()[1]), int(uid)))
    return out


def _descendants(root_pid: int, procs: list[tuple[int, int, int]]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for pid, ppid, _ in procs:
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root_pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


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


def _environ_has(pid: int, needle: str) -> bool:
    try:
        return needle.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


class Sandbox:
    """A local cluster of `n_nodes` SSH (or one local) nodes plus the hub; see the module doc."""

    def __init__(self, root: Path | str | None = None, slot: int = 0, n_nodes: int = 2, *,
                 generation: str = "new", hub_port: int = DEFAULT_HUB_PORT, mode: str = "auto",
                 venv_dir: Path = DEFAULT_VENV, report_dir: Path | str | None = None,
                 model_params: dict[str, Any] | None = None,
                 node_requirements: tuple[str, ...] = NODE_REQUIREMENTS, exo: str = "emulator",
                 preinstall_card: bool = False):
        if not 0 <= slot <= MAX_SLOT:
            raise SandboxError(f"slot must be 0..{MAX_SLOT}, got {slot}")
        if not 1 <= n_nodes <= 4:
            raise SandboxError(f"n_nodes must be 1..4, got {n_nodes}")
        if generation not in GENERATIONS:
            raise SandboxError(f"generation must be one of {sorted(GENERATIONS)}, got {generation!r}")
        self.root = Path(root) if root else default_root(slot)
        self.slot, self.n_nodes, self.generation = slot, n_nodes, generation
        self.hub_port, self.venv_dir = hub_port, Path(venv_dir)
        self.report_dir = Path(report_dir) if report_dir else self.root / "reports"
        self.model_params = dict(model_params or {})
        self.node_requirements = tuple(node_requirements)
        self.model_id = MODEL_ID
        self.mode, self.note = self._pick_mode(mode)
        self._faults: dict[int, dict[str, Any]] = {}
        self._timing: dict[int, dict[str, Any]] = {}
        self.model_info: dict[str, Any] | None = None
        self.exo_asked, self.preinstall_card = exo, preinstall_card
        self.exo, self.exo_note = pick_exo(exo, generation)
        self._real: Any = None  # the real-EXO Install once up() has it

    # -- naming ----------------------------------------------------------------------------------
    @property
    def hub_host(self) -> str:
        return f"127.0.{10 + self.slot}.1"

    @property
    def hub(self) -> hubmod.HubHandle:
        """The hub handle (works whether or not this object started it)."""
        hdir = self.root / "hub"
        return hubmod.HubHandle(self.hub_host, self.hub_port, read_pid(hdir / "hub.pid"), hdir / "hub.pid",
                                hdir / "requests.jsonl")

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def env_file(self) -> Path:
        return self.root / "model_drop.env"

    @property
    def client_key(self) -> Path:
        return self.root / "client_ed25519"

    def address(self, k: int) -> str:
        """Node k's loopback address."""
        return f"127.0.{10 + self.slot}.{10 + self._k(k)}"

    def alias(self, k: int) -> str:
        """Node k's ssh_config alias, or `local`."""
        return "local" if self.mode == "local" else f"sbx{self.slot}-node{self._k(k)}"

    def node_user(self, k: int) -> str:
        """Node k's user name (the current user for a local node)."""
        if self.mode == "local":
            return pwd.getpwuid(os.geteuid()).pw_name
        return f"mdsb{self.slot}n{self._k(k)}"

    def node_home(self, k: int) -> Path:
        """Node k's home."""
        return self.root / f"node{self._k(k)}" / "home"

    def node(self, k: int) -> NodeInfo:
        """All paths and names of node k."""
        home = self.node_home(k)
        return NodeInfo(k, self.alias(k), self.node_user(k), self.address(k), home, home / HF_PATHS[k],
                        home / EXO_PATHS[k], self.exo_models_dir(k) / folder_name(self.model_id),
                        home / "modeldrop-logs", self.root / f"node{k}" / "emulator.json")

    def node_tmp(self, k: int) -> Path:
        """Node k's own temp dir (TMPDIR of its exo), as if it were a separate machine."""
        return self.root / f"node{self._k(k)}" / "tmp"

    def exo_models_dir(self, k: int) -> Path:
        """exo's models dir on the Linux layout (`EXO_DATA_HOME/models`)."""
        return self.node_home(k) / ".local/share/exo/models"

    def _k(self, k: int) -> int:
        if not 1 <= k <= self.n_nodes:
            raise SandboxError(f"node {k} is not in this sandbox (1..{self.n_nodes})")
        return k

    def nodes(self) -> list[NodeInfo]:
        """NodeInfo for k = 1..N."""
        return [self.node(k) for k in range(1, self.n_nodes + 1)]

    # -- mode ------------------------------------------------------------------------------------
    def _pick_mode(self, mode: str) -> tuple[str, str]:
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
            if self.n_nodes > 1:
                log.error("%s Asked for %d local nodes.", note, self.n_nodes)
                raise SandboxError(f"{note} Asked for {self.n_nodes}; use --nodes 1 or run as root with sshd.")
            return "local", note
        if mode not in ("auto", "ssh"):
            raise SandboxError(f"mode must be auto, ssh or local, got {mode!r}")
        return "ssh", ""

    # -- up --------------------------------------------------------------------------------------
    def up(self) -> Path:
        """Build or refresh everything, fault switches and timing overrides cleared; returns the env file path."""
        t0 = time.monotonic()
        self._faults.clear()
        self._timing.clear()
        if self.note:
            log.warning("%s", self.note)
        if self.exo_note:
            log.warning("%s", self.exo_note)
        self._prepare_root()
        self._stop_extra_nodes()
        self.model_info = self._ensure_model()
        self._ensure_hub()
        bin_dir = self._python_bin()
        self._copy_emulator()
        self._prepare_real_exo()
        if self.mode == "ssh":
            self._ensure_client_key()
        for n in self.nodes():
            self._ensure_node(n, bin_dir)
        if self.mode == "ssh":
            self._write_ssh_files()
            for n in self.nodes():
                self._ensure_sshd(n)
        self._ensure_reference_download()
        self._write_env()
        self._save_state()
        log.info("sandbox slot %d up in %.1fs: %s", self.slot, time.monotonic() - t0, self.env_file)
        return self.env_file

    def _prepare_root(self) -> None:
        """Create root (mode 755); in SSH mode every ancestor must be traversable by node users."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        if self.mode == "ssh":
            for p in self.root.parents:
                if not p.stat().st_mode & 0o001:
                    raise SandboxError(f"{p} is not traversable by other users (mode "
                                       f"{oct(p.stat().st_mode & 0o777)}), so node users could not reach "
                                       f"{self.root}; pick a root under /var/tmp")
        self.report_dir.mkdir(parents=True, exist_ok=True)

    def _stop_extra_nodes(self) -> None:
        """Stop the sshds and user processes of nodes a previous, larger up() started."""
        state = self._load_state()
        for k_str, rec in state.get("sshd", {}).items():
            if int(k_str) > self.n_nodes:
                stop_pid(rec.get("pid"), ["sshd", rec.get("config", "?")])
                try:
                    uid = pwd.getpwnam(f"mdsb{self.slot}n{k_str}").pw_uid
                except KeyError:
                    continue
                for pid, _, puid in _processes():
                    if puid == uid:
                        stop_pid(pid, [])

    def _ensure_model(self) -> dict[str, Any]:
        mdir = self.root / "model"
        stamp = self.root / "model.json"
        params = {"model_id": self.model_id, **self.model_params}
        try:
            old = json.loads(stamp.read_text())
        except (FileNotFoundError, ValueError):
            old = None
        if old and old.get("params") == params:
            return old["info"]
        shutil.rmtree(mdir, ignore_errors=True)
        stamp.unlink(missing_ok=True)
        info = generate_model(mdir, **params)
        _write(stamp, json.dumps({"params": params, "info": info}, indent=1))
        return info

    def _ensure_hub(self) -> None:
        hdir = self.root / "hub"
        hubmod.publish(hdir / "repos", self.model_id, self.root / "model")
        try:
            h = hubmod.start_hub(hdir / "repos", self.hub_host, self.hub_port, hdir / "requests.jsonl",
                                 hdir / "hub.pid")
        except (RuntimeError, TimeoutError) as e:
            raise SandboxError(f"the hub could not start on {self.hub_host}:{self.hub_port} (is slot {self.slot} "
                               f"used by another sandbox root? see `python -m sandbox status --slot "
                               f"{self.slot}`): {e}") from None
        h.clear_faults()

    def _python_bin(self) -> Path:
        """The bin dir holding the nodes' `hf` and `python`."""
        if self.mode == "local":
            return Path(sys.executable).parent
        return ensure_node_venv(self.venv_dir, self.node_requirements) / "bin"

    def _copy_emulator(self) -> None:
        """Re-copy sandbox/exo_emulator to <root>/lib (world-readable), swapped in by rename."""
        lib = self.root / "lib"
        dest, new, old = lib / "exo_emulator", lib / ".exo_emulator.new", lib / ".exo_emulator.old"
        lib.mkdir(parents=True, exist_ok=True)
        lib.chmod(0o755)
        if not EMULATOR_SRC.is_dir():
            log.warning("no EXO emulator at %s yet: the exo wrappers will fail until it exists", EMULATOR_SRC)
            return
        for p in (new, old):
            shutil.rmtree(p, ignore_errors=True)
        shutil.copytree(EMULATOR_SRC, new, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for dirpath, _dirs, filenames in os.walk(new):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        if dest.exists():
            os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)

    def _ensure_client_key(self) -> None:
        if not self.client_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"modeldrop-sbx{self.slot}",
                            "-f", str(self.client_key)], check=True, capture_output=True)
        self.client_key.chmod(0o600)

    def _ensure_user(self, n: NodeInfo) -> tuple[int, int]:
        """Create or fix the node user; returns (uid, gid)."""
        if self.mode == "local":
            return os.geteuid(), os.getegid()
        try:
            pw = pwd.getpwnam(n.user)
        except KeyError:
            _admin(["useradd", "--home-dir", str(n.home), "--no-create-home", "--shell", "/bin/sh",
                    "--user-group", "--password", "*", "--comment", f"modeldrop sandbox {n.alias}", n.user])
            pw = pwd.getpwnam(n.user)
        if pw.pw_dir != str(n.home) or pw.pw_shell != "/bin/sh":
            # the slot's users are machine-wide: another root used this slot before
            _admin(["usermod", "--home", str(n.home), "--shell", "/bin/sh", n.user])
        if spwd_field(n.user) != "*":
            _admin(["usermod", "--password", "*", n.user])
        return pw.pw_uid, pw.pw_gid

    def _ensure_node(self, n: NodeInfo, bin_dir: Path) -> None:
        uid, gid = self._ensure_user(n)
        node_dir = n.home.parent
        node_dir.mkdir(parents=True, exist_ok=True)
        node_dir.chmod(0o755)
        n.home.mkdir(exist_ok=True)
        for d in (self.exo_models_dir(n.k), n.home / ".local/share/exo/custom_model_cards",
                  n.home / ".cache/exo", n.home / ".config/exo", n.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._write_wrappers(n, bin_dir)
        self.node_tmp(n.k).mkdir(mode=0o700, exist_ok=True)
        os.chown(self.node_tmp(n.k), uid, gid)
        # no card is pre-installed: EXO meets the model as a new drop (the canary adds the card); a card
        # left by an earlier sandbox that did pre-install one is removed so every session starts card-less
        (n.home / ".local/share/exo/custom_model_cards" / f"{folder_name(self.model_id)}.toml").unlink(missing_ok=True)
        if self.mode == "ssh":
            ssh_dir = n.home / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            _write(ssh_dir / "authorized_keys", Path(f"{self.client_key}.pub").read_text(), 0o600)
        _chown_tree(n.home, uid, gid)
        n.home.chmod(0o755)
        self._write_emulator_config(n.k)

    def _write_wrappers(self, n: NodeInfo, bin_dir: Path) -> None:
        """node k's `hf` and `exo` scripts (see HF_PATHS / EXO_PATHS)."""
        q = shlex.quote
        hf = ["#!/bin/sh", f"# hf CLI of sandbox node {n.k}: wraps the node venv's hf (not on PATH, like a real install)",
              ': "${HF_HUB_DISABLE_UPDATE_CHECK:=1}"; export HF_HUB_DISABLE_UPDATE_CHECK',
              ': "${HF_HUB_DISABLE_TELEMETRY:=1}"; export HF_HUB_DISABLE_TELEMETRY']
        exo_env = {"TMPDIR": str(self.node_tmp(n.k)),  # each node is its own machine: its own temp dir
                   "EXO_EMULATOR_CONFIG": str(n.emulator_config), "PYTHONPATH": str(self.root / "lib")}
        if self.mode == "local":  # a local node's "home" is a folder of the sandbox
            hf.append(f': "${{HF_HOME:={q(str(n.home / ".cache/huggingface"))}}}"; export HF_HOME')
            exo_env["HOME"] = str(n.home)
        hf.append(f'exec {q(str(bin_dir / "hf"))} "$@"')
        exo = self._real_entry_point(n) if self.exo == "real" else exo_entry_point(bin_dir / "python", n.k, exo_env)
        _write(n.hf_cmd, "\n".join(hf) + "\n", 0o755)
        _write(n.exo_cmd, exo, 0o755)

    def _emulator_config(self, k: int) -> dict[str, Any]:
        """node k's emulator.json (the agreed schema; see sandbox/exo_emulator/README.md)."""
        return {"generation": self.generation, "version": GENERATIONS[self.generation],
                "node_address": self.address(k),
                "peer_addresses": [self.address(j) for j in range(1, self.n_nodes + 1)],
                "friendly_name": f"sbx-node{k}", "ram_total_bytes": RAM_TOTAL,
                "ram_available_bytes": RAM_AVAILABLE, "layout": "linux",
                "faults": self._faults.get(k, {}), "timing": self._timing.get(k, {}),
                "hf_endpoint": self.hub.url}

    def _write_emulator_config(self, k: int) -> None:
        _write(self.node(k).emulator_config, json.dumps(self._emulator_config(k), indent=2) + "\n")

    def _host_key(self, k: int) -> Path:
        key = self.root / f"node{k}" / "ssh_host_ed25519_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"sbx{self.slot}-node{k}",
                            "-f", str(key)], check=True, capture_output=True)
        return key

    def _write_ssh_files(self) -> None:
        cfg = [f"# modeldrop sandbox slot {self.slot}: generated by `python -m sandbox up`; do not edit\n"]
        hosts = []
        for n in self.nodes():
            cfg.append(f"Host {n.alias}\n  HostName {n.address}\n  User {n.user}\n  Port 22\n"
                       f"  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n"
                       f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
                       f"  BatchMode yes\n  ConnectTimeout 5\n  LogLevel ERROR\n\n")
            pub = Path(f"{self._host_key(n.k)}.pub").read_text().split()
            hosts.append(f"{n.alias},{n.address} {pub[0]} {pub[1]}\n")
        _write(self.ssh_config, "".join(cfg))
        _write(self.known_hosts, "".join(hosts))

    def _sshd_config_path(self, k: int) -> Path:
        return self.root / f"node{k}" / "sshd_config"

    def _ensure_sshd(self, n: NodeInfo) -> None:
        ndir = self.root / f"node{n.k}"
        cfg = self._sshd_config_path(n.k)
        text = (f"# sshd of sandbox node {n.k} ({n.alias})\nListenAddress {n.address}\nPort 22\n"
                f"HostKey {self._host_key(n.k)}\nPidFile {ndir / 'sshd.pid'}\n"
                "AuthorizedKeysFile .ssh/authorized_keys\nPubkeyAuthentication yes\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n"
                f"UsePAM no\nAllowUsers {n.user}\nStrictModes yes\nPrintMotd no\nPrintLastLog no\n"
                "AcceptEnv LANG LC_*\nMaxSessions 32\nMaxStartups 64:30:128\n"
                "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n")
        changed = not cfg.exists() or cfg.read_text() != text
        _write(cfg, text, 0o600)
        pid = read_pid(ndir / "sshd.pid")
        needles = ["sshd", str(cfg)]
        if pid_matches(pid, needles) and not changed:
            return
        stop_pid(pid, needles)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        r = subprocess.run([SSHD, "-f", str(cfg), "-E", str(ndir / "sshd.log")], capture_output=True, text=True)
        if r.returncode != 0:
            tail = (ndir / "sshd.log").read_text(errors="replace")[-1500:] if (ndir / "sshd.log").exists() else ""
            raise SandboxError(f"sshd for node {n.k} failed (rc {r.returncode}): {r.stderr}{tail}")
        wait_until(lambda: pid_matches(read_pid(ndir / "sshd.pid"), needles) and _tcp_open(n.address, 22),
                   10, f"sshd of node {n.k} to listen on {n.address}:22")

    def _ensure_reference_download(self) -> None:
        """A complete `hf download` of the current commit, for populate_model()."""
        commit = self.hub.commit(self.model_id)
        ref = self.root / "reference" / folder_name(self.model_id)
        if (ref / ".cache/huggingface/trees" / f"{commit}.json").exists():
            return
        shutil.rmtree(ref, ignore_errors=True)
        hf = Path(sys.executable).parent / "hf"
        env = {**os.environ, "HF_ENDPOINT": self.hub.url, "HF_HOME": str(self.root / "reference" / ".hfhome"),
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("HF_TOKEN", None)
        r = subprocess.run([str(hf), "download", self.model_id, "--local-dir", str(ref)], env=env,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise SandboxError(f"reference download failed (rc {r.returncode}): {r.stderr[-1500:]}")

    def _write_env(self) -> None:
        n_list = [n.alias for n in self.nodes()]
        lines = [f"# modeldrop sandbox, slot {self.slot}: {self.n_nodes} {self.mode} node(s), "
                 f"{'real EXO' if self.exo == 'real' else 'exo emulator'} generation {self.generation}.",
                 f"# Written by `python -m sandbox up --slot {self.slot} --nodes {self.n_nodes}` on "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.",
                 "# Use it with: pytest gates/ --env-file " + str(self.env_file)]
        if self.note:
            lines.append(f"# NOTE: {self.note}")
        lines += ["", "# the model and the nodes", f"MODEL_ID={self.model_id}", f"NODES={','.join(n_list)}"]
        if self.mode == "ssh":
            lines += [f"SSH_CONFIG={self.ssh_config}", f"SSH_KNOWN_HOSTS={self.known_hosts}"]
        weights = len((self.model_info or {}).get("weight_files", []))
        lines += ["", "# the hub (a local fake Hugging Face hub) and what to expect from it",
                  f"HF_ENDPOINT={self.hub.url}", f"EXPECTED_SAFE_TENSOR_COUNT={weights}",
                  "", "# exo", f"EXO_API_PORT={EXO_API_PORT}", f"EXO_NAMESPACE=modeldrop-sbx{self.slot}",
                  "", "# the suite's own files", f"PROFILE_PATH={self._ensure_profiles()}",
                  f"RUN_REPORT_DIR={self.report_dir}"]
        for n in self.nodes():
            lines += ["", f"# node {n.k}: {n.user}@{n.address} ({n.alias})", f"MODEL_DIR_NODE{n.k}={n.model_dir}",
                      f"HF_CMD_NODE{n.k}={n.hf_cmd}", f"EXO_CMD_NODE{n.k}={n.exo_cmd}",
                      f"EXO_LOG_DIR_NODE{n.k}={n.log_dir}"]
        _write(self.env_file, "\n".join(lines) + "\n")

    def _ensure_profiles(self) -> Path:
        p = self.root / "model_profiles.json"
        if not p.exists():
            _write(p, json.dumps({"models": {}}, indent=2) + "\n")
        return p

    # -- state -----------------------------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.root / "sandbox.json"

    def _load_state(self) -> dict[str, Any]:
        try:
            return json.loads(self._state_path().read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self) -> None:
        state = {"slot": self.slot, "n_nodes": self.n_nodes, "mode": self.mode, "generation": self.generation,
                 "hub_port": self.hub_port, "venv_dir": str(self.venv_dir), "report_dir": str(self.report_dir),
                 "model_params": self.model_params, "note": self.note, "exo": self.exo,
                 "preinstall_card": self.preinstall_card,
                 "hub": {"pid": self.hub.pid, "host": self.hub_host, "port": self.hub_port},
                 "sshd": {str(n.k): {"pid": read_pid(self.root / f"node{n.k}" / "sshd.pid"),
                                     "config": str(self._sshd_config_path(n.k))}
                          for n in self.nodes() if self.mode == "ssh"}}
        _write(self._state_path(), json.dumps(state, indent=2) + "\n")

    @classmethod
    def from_root(cls, root: Path | str) -> Sandbox:
        """The sandbox recorded in `root/sandbox.json` (for down/status from another process)."""
        root = Path(root)
        try:
            s = json.loads((root / "sandbox.json").read_text())
        except FileNotFoundError:
            raise SandboxError(f"no sandbox at {root} (no sandbox.json); run `python -m sandbox up`") from None
        return cls(root, s["slot"], s["n_nodes"], generation=s["generation"], hub_port=s["hub_port"],
                   mode=s["mode"], venv_dir=Path(s["venv_dir"]), report_dir=s.get("report_dir"),
                   model_params=s.get("model_params"), exo=s.get("exo", "emulator"),
                   preinstall_card=s.get("preinstall_card", False))

    # -- runtime controls --------------------------------------------------------------------------
    def set_exo_generation(self, generation: str) -> None:
        """Switch every node's emulator to `new` or `old` (takes effect at the emulator's next start; with real
        EXO the nodes' `exo` switches install at the next up())."""
        if generation not in GENERATIONS:
            raise SandboxError(f"generation must be one of {sorted(GENERATIONS)}, got {generation!r}")
        self.generation = generation
        for n in self.nodes():
            self._write_emulator_config(n.k)
        if self._state_path().exists():
            self._save_state()

    def set_exo_faults(self, k: int, faults: dict[str, Any]) -> None:
        """Replace node k's emulator fault switches (the `faults` object of emulator.json)."""
        self._faults[self._k(k)] = dict(faults)
        self._write_emulator_config(k)

    def set_exo_timing(self, k: int, timing: dict[str, Any]) -> None:
        """Replace node k's emulator timing overrides (`timing` of emulator.json, e.g. hello_s)."""
        self._timing[self._k(k)] = dict(timing)
        self._write_emulator_config(k)

    def set_hub_faults(self, faults: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """Shortcut for `self.hub.set_faults(...)`."""
        return self.hub.set_faults(faults, **kw)

    # -- node files --------------------------------------------------------------------------------
    def _owner(self, k: int) -> tuple[int, int]:
        pw = pwd.getpwnam(self.node_user(k))
        return pw.pw_uid, pw.pw_gid

    def reset_node_files(self, k: int, stop_processes: bool = True) -> None:
        """Wipe node k's model dir, exo state (cache, config, event log), HF cache, logs and temp dir."""
        n = self.node(k)
        if stop_processes:
            self.stop_node_processes(k)
        exo_data = n.home / ".local/share/exo"
        for p in (n.model_dir, exo_data / "event_log", exo_data / "models" / "caches", n.home / ".cache/exo",
                  n.home / ".config/exo", n.home / ".cache/huggingface", n.log_dir):
            shutil.rmtree(p, ignore_errors=True)
        shutil.rmtree(self.node_tmp(k), ignore_errors=True)
        for d in (self.exo_models_dir(k), n.home / ".cache/exo", n.home / ".config/exo", n.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.node_tmp(k).mkdir(mode=0o700)
        for d in (n.home / ".local", n.home / ".cache", n.home / ".config", n.log_dir, self.node_tmp(k)):
            _chown_tree(d, *self._owner(k))

    def populate_model(self, k: int, dir: Path | str | None = None, *,  # noqa: A002 - the agreed name
                       source: Path | str | None = None) -> Path:
        """Copy a complete download, as `hf download` leaves it (with .cache/huggingface), into
        `dir` on node k (default: its MODEL_DIR), replacing what is there; new folders and files
        are owned by the node user. `source` defaults to the reference download of the hub's
        current commit. Returns the destination."""
        n = self.node(k)
        src = Path(source) if source else self.root / "reference" / folder_name(self.model_id)
        dest = Path(dir) if dir else n.model_dir
        if not (src / "config.json").exists():
            raise SandboxError(f"{src} holds no download (no config.json); run up() first")
        uid, gid = self._owner(k)
        missing = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
        for p in reversed(missing):
            p.mkdir()
            os.chown(p, uid, gid)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest, symlinks=True)
        _chown_tree(dest, uid, gid)
        return dest

    # -- processes -----------------------------------------------------------------------------------
    def _node_pids(self, k: int) -> list[int]:
        """Processes of node k: its user's (SSH mode) and any exo emulator of its config."""
        needle = f"EXO_EMULATOR_CONFIG={self.root / f'node{k}' / 'emulator.json'}"
        real = f"MODELDROP_EXO_NODE_HOME={self.node_home(k)}"
        uid = self._owner(k)[0] if self.mode == "ssh" else None
        me = os.getpid()
        return [pid for pid, _, puid in _processes() if pid != me and not is_zombie(pid)
                and (puid == uid or _environ_has(pid, needle) or _environ_has(pid, real))]

    def node_pids(self, k: int) -> list[int]:
        """Live processes of node k: its user's (SSH mode) and any exo emulator of its config."""
        return self._node_pids(k)

    def stop_node_processes(self, k: int, timeout: float = 5.0) -> list[str]:
        """Stop every process of node k (see `_node_pids`), by pid; returns what was stopped."""
        stopped = []
        for pid in self._node_pids(k):
            line = cmdline(pid) or "?"
            if stop_pid(pid, [line[:40]] if line != "?" else [], timeout):
                stopped.append(f"node{k} pid {pid}: {line[:80]}")
        return stopped

    def down(self) -> list[str]:
        """Stop what the sandbox started; returns one line per stopped process."""
        stopped: list[str] = []
        state = self._load_state()
        for k_str, rec in sorted(state.get("sshd", {}).items()):
            pid, needles = rec.get("pid"), ["sshd", rec.get("config", "?")]
            if pid_matches(pid, needles):
                sessions = _descendants(pid, _processes())
                if stop_pid(pid, needles):
                    stopped.append(f"node{k_str} sshd pid {pid}")
                for s in sessions:
                    line = cmdline(s)
                    if line and line.startswith("sshd:") and stop_pid(s, [line]):
                        stopped.append(f"node{k_str} ssh session pid {s}")
        for k in range(1, self.n_nodes + 1):
            try:
                stopped += self.stop_node_processes(k)
            except KeyError:
                pass  # the user was never created
        hub_state = state.get("hub", {"host": self.hub_host, "port": self.hub_port})
        if hubmod.stop_hub(self.root / "hub" / "hub.pid", hub_state["host"], hub_state["port"]):
            stopped.append(f"hub pid {hub_state.get('pid')}")
        return stopped

    def destroy(self) -> list[str]:
        """down(), then delete the node users and the root folder."""
        stopped = self.down()
        if self.mode == "ssh":
            for k in range(1, self.n_nodes + 1):
                try:
                    pwd.getpwnam(self.node_user(k))
                except KeyError:
                    continue
                _admin(["userdel", self.node_user(k)])
        shutil.rmtree(self.root, ignore_errors=True)
        return stopped

    def status(self) -> dict[str, Any]:
        """What runs and where: hub, nodes (sshd alive), env file."""
        nodes = []
        for n in self.nodes():
            pid = read_pid(self.root / f"node{n.k}" / "sshd.pid")
            alive = self.mode == "local" or pid_matches(pid, ["sshd", str(self._sshd_config_path(n.k))])
            nodes.append({"k": n.k, "alias": n.alias, "user": n.user, "address": n.address,
                          "home": str(n.home), "sshd_pid": pid, "alive": alive,
                          "hf_cmd": str(n.hf_cmd), "exo_cmd": str(n.exo_cmd), "model_dir": str(n.model_dir)})
        h = self.hub
        return {"root": str(self.root), "slot": self.slot, "mode": self.mode, "note": self.note, "exo": self.exo,
                "generation": self.generation, "env_file": str(self.env_file),
                "hub": {"url": h.url, "pid": h.pid, "alive": h.is_alive()}, "nodes": nodes}

    # -- real EXO (sandbox/exo_real) ---------------------------------------------------------------------
    @property
    def real_exo(self) -> Any:
        """The real-EXO install the nodes run (its `python` and `env`), or None for the emulator or before up()."""
        return self._real

    def _prepare_real_exo(self) -> None:
        """For `exo == "real"`: the cached install (built on first use, its time logged), the stand-ins
        and node shim in <root>/lib/exo_real, and (preinstall_card) EXO's resources with the model's card.
        A failed install removes every node's `exo`, so no node looks healthy, and raises SandboxError."""
        if self.exo != "real":
            self._real = None
            return
        from sandbox.exo_real import install as inst
        from sandbox.exo_real.node import card_for_generation, resources_with_card, stage_node_files
        from sandbox.model import model_card_toml
        if inst.current(self.generation) is None:
            log.warning("building real EXO (%s) once for this machine; several minutes", self.generation)
        try:
            self._real = inst.ensure_install(self.generation)
        except inst.InstallError as e:
            for k in range(1, self.n_nodes + 1):
                (self.node_home(k) / EXO_PATHS[k]).unlink(missing_ok=True)
            raise SandboxError(str(e)) from None
        if self._real.built_s is not None:
            log.warning("real EXO (%s) built in %.0fs (cached from now on)", self.generation, self._real.built_s)
        stage_node_files(self.root / "lib" / "exo_real")
        if self.preinstall_card:
            resources_with_card(self._real, self.root / "exo-resources", f"{folder_name(self.model_id)}.toml",
                                card_for_generation(model_card_toml(self.model_info or {}), self.generation))

    def _real_entry_point(self, n: NodeInfo) -> str:
        """node k's `exo` running real EXO (sandbox/exo_real/node.py), bound to the node's own address."""
        from sandbox.exo_real.node import entry_point
        env = {"TMPDIR": str(self.node_tmp(n.k)), "MODELDROP_EXO_NODE_ADDRESS": n.address,
               "MODELDROP_EXO_PEER_ADDRESSES": ",".join(self.address(j) for j in range(1, self.n_nodes + 1)),
               "MODELDROP_EXO_NODE_HOME": str(n.home)}
        if self.mode == "local":
            env["HOME"] = str(n.home)
        if self.preinstall_card:  # off by default: the canary adds the card itself (POST /models/add)
            env["EXO_RESOURCES_DIR"] = str(self.root / "exo-resources")
        return entry_point(self._real, n.k, env, self.root / "lib" / "exo_real", n.emulator_config)

    # -- conveniences for tests -----------------------------------------------------------------------
    def ssh_argv(self, k: int, argv: list[str]) -> list[str]:
        """`ssh -F ssh_config alias -- <argv joined for the remote shell>` (local: argv itself)."""
        if self.mode == "local":
            return list(argv)
        return ["ssh", "-F", str(self.ssh_config), self.alias(k), "--", shlex.join(argv)]

    def run_on(self, k: int, argv: list[str], env: dict[str, str] | None = None,
               timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run argv on node k, variables travelling as `env K=V` inside the command (as the suite does)."""
        full = (["env", *[f"{a}={b}" for a, b in (env or {}).items()]] if env else []) + list(argv)
        return subprocess.run(self.ssh_argv(k, full), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

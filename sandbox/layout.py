"""Names and paths of one sandbox: where each node's address, user, home, tools and files are.

Contract: `Layout(root, slot, n_nodes, mode, hub_port)` answers for node k in 1..n_nodes (another k
raises SandboxError) without touching the machine: node k is `127.0.{10+slot}.{10+k}`, user
`mdsb{slot}n{k}` (the current user for a `local` node), alias `sbx{slot}-node{k}` (`local`), home
`<root>/node{k}/home`, its `hf` and `exo` at a different path per node (HF_PATHS, EXO_PATHS, relative to
the home); the hub is on `127.0.{10+slot}.1:<hub_port>`. `write_file` writes atomically with a mode;
`chown_tree` hands a tree to a node user without following symlinks.
"""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from sandbox import MAX_SLOT
from sandbox.model import MODEL_ID, folder_name

EXO_API_PORT = 52415
DEFAULT_HUB_PORT = 8900
# Where each node's tools live, relative to its home: different per node, like real installs.
HF_PATHS = {1: ".local/bin/hf", 2: "homebrew/bin/hf", 3: "miniforge3/bin/hf", 4: "Library/Python/3.11/bin/hf"}
EXO_PATHS = {1: "exo/.venv/bin/exo", 2: "Applications/EXO.app/Contents/Resources/exo/exo",
             3: "src/exo/.venv/bin/exo", 4: "opt/exo/bin/exo"}
# A Homebrew-style exo (`Sandbox(homebrew_exo=True)`): node k's own `<node dir>/homebrew` seen at /opt/homebrew by
# everything node k runs (its sshd runs in a mount namespace of its own), so /opt/homebrew/bin/exo is each node's.
HOMEBREW_PREFIX = Path("/opt/homebrew")


class SandboxError(RuntimeError):
    """The sandbox cannot be built as asked; the message says why and what to do."""


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


class Layout:
    """The names and paths of a sandbox of `n_nodes` nodes in `slot` under `root` (see the module doc)."""

    def __init__(self, root: Path, slot: int, n_nodes: int, mode: str, hub_port: int = DEFAULT_HUB_PORT,
                 model_id: str = MODEL_ID) -> None:
        if not 0 <= slot <= MAX_SLOT:
            raise SandboxError(f"slot must be 0..{MAX_SLOT}, got {slot}")
        if not 1 <= n_nodes <= 4:
            raise SandboxError(f"n_nodes must be 1..4, got {n_nodes}")
        self.root, self.slot, self.n_nodes, self.mode = Path(root), slot, n_nodes, mode
        self.hub_port, self.model_id = hub_port, model_id

    # -- the sandbox's own files -------------------------------------------------------------------
    @property
    def hub_host(self) -> str:
        return f"127.0.{10 + self.slot}.1"

    @property
    def hub_url(self) -> str:
        """The HF_ENDPOINT of the sandbox's hub."""
        return f"http://{self.hub_host}:{self.hub_port}"

    @property
    def hub_dir(self) -> Path:
        """The hub's repos, request log and pid file."""
        return self.root / "hub"

    @property
    def lib_dir(self) -> Path:
        """What the nodes' `exo` runs: the emulator's copy and real EXO's stand-ins."""
        return self.root / "lib"

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

    @property
    def node_key(self) -> Path:
        """The key each node user logs in to the other nodes with (the guide's SSH both ways)."""
        return self.root / "node_ed25519"

    @property
    def state_file(self) -> Path:
        """`sandbox.json`: what `up()` built, for down/status from another process."""
        return self.root / "sandbox.json"

    @property
    def reference_dir(self) -> Path:
        """A complete `hf download` of the hub's current commit (for populate_model)."""
        return self.root / "reference" / folder_name(self.model_id)

    # -- node k ------------------------------------------------------------------------------------
    def address(self, k: int) -> str:
        """Node k's loopback address."""
        return f"127.0.{10 + self.slot}.{10 + self.check_node(k)}"

    def addresses(self) -> list[str]:
        """Every node's address, node 1 first."""
        return [self.address(j) for j in range(1, self.n_nodes + 1)]

    def alias(self, k: int) -> str:
        """Node k's ssh_config alias, or `local`."""
        return "local" if self.mode == "local" else f"sbx{self.slot}-node{self.check_node(k)}"

    def node_user(self, k: int) -> str:
        """Node k's user name (the current user for a local node)."""
        if self.mode == "local":
            return pwd.getpwuid(os.geteuid()).pw_name
        return f"mdsb{self.slot}n{self.check_node(k)}"

    def node_dir(self, k: int) -> Path:
        """Node k's folder: its home, sshd files, emulator.json and temp dir."""
        return self.root / f"node{self.check_node(k)}"

    def node_home(self, k: int) -> Path:
        """Node k's home."""
        return self.node_dir(k) / "home"

    def node_tmp(self, k: int) -> Path:
        """Node k's own temp dir (TMPDIR of its exo), as if it were a separate machine."""
        return self.node_dir(k) / "tmp"

    def homebrew_dir(self, k: int) -> Path:
        """What node k sees at /opt/homebrew when the sandbox installs a Homebrew-style exo (`homebrew_exo`)."""
        return self.node_dir(k) / "homebrew"

    def exo_models_dir(self, k: int) -> Path:
        """exo's models dir on the Linux layout (`EXO_DATA_HOME/models`)."""
        return self.node_home(k) / ".local/share/exo/models"

    def sshd_config_path(self, k: int) -> Path:
        return self.node_dir(k) / "sshd_config"

    def node(self, k: int) -> NodeInfo:
        """All paths and names of node k."""
        home = self.node_home(k)
        return NodeInfo(k, self.alias(k), self.node_user(k), self.address(k), home, home / HF_PATHS[k],
                        home / EXO_PATHS[k], self.exo_models_dir(k) / folder_name(self.model_id),
                        home / "modeldrop-logs", self.node_dir(k) / "emulator.json")

    def nodes(self) -> list[NodeInfo]:
        """NodeInfo for k = 1..N."""
        return [self.node(k) for k in range(1, self.n_nodes + 1)]

    def check_node(self, k: int) -> int:
        """`k` when it is a node of this sandbox, else a SandboxError."""
        if not 1 <= k <= self.n_nodes:
            raise SandboxError(f"node {k} is not in this sandbox (1..{self.n_nodes})")
        return k


def prepare_root(root: Path, shared: bool, report_dir: Path) -> None:
    """Create root (mode 755) and the report dir; `shared` (SSH nodes): every ancestor must be traversable by the
    node users."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    if shared:
        for p in root.parents:
            if not p.stat().st_mode & 0o001:
                raise SandboxError(f"{p} is not traversable by other users (mode {oct(p.stat().st_mode & 0o777)}), "
                                   f"so node users could not reach {root}; pick a root under /var/tmp")
    report_dir.mkdir(parents=True, exist_ok=True)


def ensure_profiles(root: Path) -> Path:
    """The sandbox's own (empty at first) model profiles file."""
    p = root / "model_profiles.json"
    if not p.exists():
        write_file(p, json.dumps({"models": {}}, indent=2) + "\n")
    return p


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write atomically (temp + replace) with `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """chown -R without following symlinks."""
    if not path.exists():
        return
    os.chown(path, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)

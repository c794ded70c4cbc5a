"""The sandbox cluster: N (1-4) SSH nodes on loopback, the fake hub, and an env file for the suite.

Contract of `Sandbox(root, slot, n_nodes)` (a `Layout`: every name and path of the sandbox):
- `up()` builds or refreshes, idempotently (seconds when warm), and returns the env file path:
  per node k a user `mdsb{slot}n{k}` (password field `*`) with its own home, its own sshd on
  `127.0.{10+slot}.{10+k}:22` (key-only, AllowUsers, own host key and pid file) (`users`), the `hf`
  CLI and the EXO emulator or real EXO as wrapper scripts at a different absolute path per node
  (nothing on PATH), an `emulator.json` (`exo_install`), exo's Linux layout
  (`~/.local/share/exo/{models,custom_model_cards}`) (`nodes`); one client key, `ssh_config` (aliases
  `sbx{slot}-node{k}`) and `known_hosts`; the hub on `127.0.{10+slot}.1:<hub_port>` with the tiny model
  published (`hub_model`); `model_drop.env`, `model_profiles.json` (if absent) and the reports dir.
  Hub and node fault switches (and emulator timing overrides) are cleared by `up()`, and so is a cable
  taken out with `set_cabling`; `topology` ("mesh", or "ring": each node reaches only its two neighbours,
  see `cabling.py`) stays.
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
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sandbox import hub_model, nodes, users
from sandbox.cabling import Cabling
from sandbox.exo_install import NodeExo, check_generation, pick_exo
from sandbox.hub import HubHandle, stop_hub
from sandbox.layout import (
    DEFAULT_HUB_PORT,
    EXO_API_PORT,
    Layout,
    NodeInfo,
    SandboxError,
    default_root,
    ensure_profiles,
    prepare_root,
    write_file,
)
from sandbox.nodevenv import DEFAULT_VENV, NODE_REQUIREMENTS, ensure_node_venv

__all__ = ["NodeInfo", "Sandbox", "SandboxError", "default_root", "pick_exo"]

log = logging.getLogger("sandbox")


class Sandbox(Layout):
    """A local cluster of `n_nodes` SSH (or one local) nodes plus the hub; see the module doc."""

    def __init__(self, root: Path | str | None = None, slot: int = 0, n_nodes: int = 2, *,
                 generation: str = "new", hub_port: int = DEFAULT_HUB_PORT, mode: str = "auto",
                 venv_dir: Path = DEFAULT_VENV, report_dir: Path | str | None = None,
                 model_params: dict[str, Any] | None = None,
                 node_requirements: tuple[str, ...] = NODE_REQUIREMENTS, exo: str = "emulator",
                 preinstall_card: bool = False, homebrew_exo: bool = False, topology: str = "mesh"):
        super().__init__(Path(root) if root else default_root(slot), slot, n_nodes, mode, hub_port)
        check_generation(generation)
        self.mode, self.note = users.pick_mode(mode, n_nodes)
        self.venv_dir, self.node_requirements = Path(venv_dir), tuple(node_requirements)
        self.report_dir = Path(report_dir) if report_dir else self.root / "reports"
        self.model_params = dict(model_params or {})
        self.model_info: dict[str, Any] | None = None
        self.exo_asked = exo
        kind, self.exo_note = pick_exo(exo, generation)
        self.node_exo = NodeExo(self, generation, kind, preinstall_card)
        self.homebrew_exo = homebrew_exo and self.mode == "ssh"  # each node's exo also at /opt/homebrew/bin/exo
        self.node_exo.cabling = Cabling.make(n_nodes, topology)

    # -- what the nodes run --------------------------------------------------------------------------
    @property
    def exo(self) -> str:
        """The nodes' EXO: "real" or "emulator"."""
        return self.node_exo.kind

    @property
    def generation(self) -> str:
        return self.node_exo.generation

    @property
    def preinstall_card(self) -> bool:
        return self.node_exo.preinstall_card

    @property
    def cabling(self) -> Cabling:
        """How the nodes reach each other (mesh or ring, cables taken out)."""
        return self.node_exo.cabling

    @property
    def real_exo(self) -> Any:
        """The real-EXO install the nodes run (its `python` and `env`), or None for the emulator or before up()."""
        return self.node_exo.real

    @property
    def hub(self) -> HubHandle:
        """The hub handle (works whether or not this object started it)."""
        return hub_model.hub_handle(self)

    # -- up --------------------------------------------------------------------------------------------
    def up(self) -> Path:
        """Build or refresh everything, fault switches and timing overrides cleared; returns the env file path."""
        t0 = time.monotonic()
        self.node_exo.clear_switches()
        self.node_exo.cabling = Cabling.make(self.n_nodes, self.cabling.topology)
        for note in (self.note, self.exo_note):
            if note:
                log.warning("%s", note)
        prepare_root(self.root, self.mode == "ssh", self.report_dir)
        nodes.stop_extra_nodes(self, self._load_state().get("sshd", {}))
        self.model_info = hub_model.ensure_model(self, self.model_params)
        hub_model.ensure_hub(self)
        bin_dir = self._python_bin()
        self.node_exo.prepare(self.model_info)
        if self.mode == "ssh":
            users.ensure_client_key(self)
        for n in self.nodes():
            self._ensure_node(n, bin_dir)
        if self.mode == "ssh":
            users.write_ssh_files(self)
            self._ensure_sshds()
        hub_model.ensure_reference_download(self)
        write_file(self.env_file, env_file_text(self, ensure_profiles(self.root)))
        self._save_state()
        log.info("sandbox slot %d up in %.1fs: %s", self.slot, time.monotonic() - t0, self.env_file)
        return self.env_file

    def _ensure_sshds(self) -> None:
        """Every node's sshd, each in a mount namespace of its own seeing its Homebrew-style prefix when
        `homebrew_exo`: its exo is then written there and only there (node 2's usual place, EXO.app in
        ~/Applications, is a place exo installs to: kept, it would be a second install)."""
        for n in self.nodes():
            homebrew = None
            if self.homebrew_exo:
                homebrew = self.node_exo.write_homebrew(n.k).parent.parent
                n.exo_cmd.unlink(missing_ok=True)
            users.ensure_sshd(self, n, homebrew)

    def set_homebrew_exo(self, on: bool) -> None:
        """Install each node's exo at /opt/homebrew/bin/exo as that node sees it, instead of its usual path (on),
        or back (off): its sshd restarts in (or out of) a mount namespace of its own (sessions open on it end).
        SSH nodes only."""
        if self.mode != "ssh":
            raise SandboxError("a Homebrew-style exo needs SSH nodes (each sshd in a mount namespace of its own)")
        self.homebrew_exo = on
        bin_dir = self._python_bin()
        for n in self.nodes():
            self.node_exo.write_tools(n, bin_dir)
            nodes.hand_over(n, *users.owner(self, n.k))
        self._ensure_sshds()
        self._save_state()

    def _python_bin(self) -> Path:
        """The bin dir holding the nodes' `hf` and `python`."""
        if self.mode == "local":
            return Path(sys.executable).parent
        return ensure_node_venv(self.venv_dir, self.node_requirements) / "bin"

    def _ensure_node(self, n: NodeInfo, bin_dir: Path) -> None:
        uid, gid = users.ensure_user(self, n)
        nodes.make_home(self, n, uid, gid)
        self.node_exo.write_tools(n, bin_dir)
        if self.mode == "ssh":
            users.write_node_ssh(self, n)
        nodes.hand_over(n, uid, gid)
        self.node_exo.write_config(n.k)

    # -- state ---------------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self) -> None:
        state = {"slot": self.slot, "n_nodes": self.n_nodes, "mode": self.mode, "generation": self.generation,
                 "hub_port": self.hub_port, "venv_dir": str(self.venv_dir), "report_dir": str(self.report_dir),
                 "model_params": self.model_params, "note": self.note, "exo": self.exo,
                 "preinstall_card": self.preinstall_card, "homebrew_exo": self.homebrew_exo,
                 "topology": self.cabling.topology,
                 "hub": {"pid": self.hub.pid, "host": self.hub_host, "port": self.hub_port},
                 "sshd": users.sshd_state(self)}
        write_file(self.state_file, json.dumps(state, indent=2) + "\n")

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
                   preinstall_card=s.get("preinstall_card", False), homebrew_exo=s.get("homebrew_exo", False),
                   topology=s.get("topology", "mesh"))

    # -- runtime controls ------------------------------------------------------------------------------
    def set_exo_generation(self, generation: str) -> None:
        """Switch every node's emulator to `new` or `old` (takes effect at the emulator's next start; with real
        EXO the nodes' `exo` switches install at the next up())."""
        self.node_exo.set_generation(generation)
        if self.state_file.exists():
            self._save_state()

    def set_cabling(self, topology: str | None = None, cut: list[tuple[int, int]] | tuple = ()) -> Cabling:
        """Recable the nodes: `topology` (default: as built) with the cables in `cut` taken out (pairs of node
        numbers); each node's EXO reads it when it starts. `up()` puts every cable back."""
        cabling = Cabling.make(self.n_nodes, topology or self.cabling.topology, cut)
        self.node_exo.set_cabling(cabling)
        return cabling

    def set_exo_faults(self, k: int, faults: dict[str, Any]) -> None:
        """Replace node k's emulator fault switches (the `faults` object of emulator.json)."""
        self.node_exo.set_faults(k, faults)

    def set_exo_timing(self, k: int, timing: dict[str, Any]) -> None:
        """Replace node k's emulator timing overrides (`timing` of emulator.json, e.g. hello_s)."""
        self.node_exo.set_timing(k, timing)

    def set_hub_faults(self, faults: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """Shortcut for `self.hub.set_faults(...)`."""
        return self.hub.set_faults(faults, **kw)

    def reset_node_files(self, k: int, stop_processes: bool = True) -> None:
        """Wipe node k's model dir, exo state (cache, config, event log), HF cache, logs and temp dir."""
        if stop_processes:
            self.stop_node_processes(k)
        nodes.reset_files(self, k)

    def populate_model(self, k: int, dir: Path | str | None = None, *,  # noqa: A002 - the agreed name
                       source: Path | str | None = None) -> Path:
        """Copy a complete download, as `hf download` leaves it (with .cache/huggingface), into
        `dir` on node k (default: its MODEL_DIR), replacing what is there; new folders and files
        are owned by the node user. `source` defaults to the reference download of the hub's
        current commit. Returns the destination."""
        n = self.node(k)
        src = Path(source) if source else self.reference_dir
        return nodes.populate_model(self, k, Path(dir) if dir else n.model_dir, src)

    # -- processes -------------------------------------------------------------------------------------
    def node_pids(self, k: int) -> list[int]:
        """Live processes of node k: its user's (SSH mode) and any exo emulator of its config."""
        return nodes.node_pids(self, k)

    def stop_node_processes(self, k: int, timeout: float = 5.0) -> list[str]:
        """Stop every process of node k (see `node_pids`), by pid; returns what was stopped."""
        return nodes.stop_processes(self, k, timeout)

    def down(self) -> list[str]:
        """Stop what the sandbox started; returns one line per stopped process."""
        state = self._load_state()
        stopped = users.stop_sshds(state.get("sshd", {}))
        for k in range(1, self.n_nodes + 1):
            try:
                stopped += self.stop_node_processes(k)
            except KeyError:
                pass  # the user was never created
        hub_state = state.get("hub", {"host": self.hub_host, "port": self.hub_port})
        if stop_hub(self.hub_dir / "hub.pid", hub_state["host"], hub_state["port"]):
            stopped.append(f"hub pid {hub_state.get('pid')}")
        return stopped

    def destroy(self) -> list[str]:
        """down(), then delete the node users and the root folder."""
        stopped = self.down()
        users.delete_users(self)
        shutil.rmtree(self.root, ignore_errors=True)
        return stopped

    def status(self) -> dict[str, Any]:
        """What runs and where: hub, nodes (sshd alive), env file."""
        nodes_now = [{"k": n.k, "alias": n.alias, "user": n.user, "address": n.address, "home": str(n.home),
                      "sshd_pid": users.sshd_pid(self, n.k),
                      "alive": self.mode == "local" or users.sshd_alive(self, n.k),
                      "hf_cmd": str(n.hf_cmd), "exo_cmd": str(n.exo_cmd), "model_dir": str(n.model_dir)}
                     for n in self.nodes()]
        h = self.hub
        return {"root": str(self.root), "slot": self.slot, "mode": self.mode, "note": self.note, "exo": self.exo,
                "generation": self.generation, "topology": self.cabling.describe(), "env_file": str(self.env_file),
                "hub": {"url": h.url, "pid": h.pid, "alive": h.is_alive()}, "nodes": nodes_now}

    # -- conveniences for tests ------------------------------------------------------------------------
    def ssh_argv(self, k: int, argv: list[str]) -> list[str]:
        """`ssh -F ssh_config alias -- <argv joined for the remote shell>` (local: argv itself)."""
        return users.ssh_argv(self, k, argv)

    def run_on(self, k: int, argv: list[str], env: dict[str, str] | None = None,
               timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run argv on node k, variables travelling as `env K=V` inside the command (as the suite does)."""
        full = (["env", *[f"{a}={b}" for a, b in (env or {}).items()]] if env else []) + list(argv)
        return subprocess.run(self.ssh_argv(k, full), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def env_file_text(sbx: Sandbox, profiles: Path) -> str:
    """`model_drop.env` for the suite: the model, the nodes, ssh files, the hub, exo, the suite's own files."""
    n_list = [n.alias for n in sbx.nodes()]
    lines = [f"# modeldrop sandbox, slot {sbx.slot}: {sbx.n_nodes} {sbx.mode} node(s), "
             f"{'real EXO' if sbx.exo == 'real' else 'exo emulator'} generation {sbx.generation}, "
             f"cabled as a {sbx.cabling.describe()}.",
             f"# Written by `python -m sandbox up --slot {sbx.slot} --nodes {sbx.n_nodes}` on "
             f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.",
             "# Use it with: pytest gates/ --env-file " + str(sbx.env_file)]
    if sbx.note:
        lines.append(f"# NOTE: {sbx.note}")
    lines += ["", "# the model and the nodes", f"MODEL_ID={sbx.model_id}", f"NODES={','.join(n_list)}"]
    if sbx.mode == "ssh":
        lines += [f"SSH_CONFIG={sbx.ssh_config}", f"SSH_KNOWN_HOSTS={sbx.known_hosts}"]
    weights = len((sbx.model_info or {}).get("weight_files", []))
    lines += ["", "# the hub (a local fake Hugging Face hub) and what to expect from it",
              f"HF_ENDPOINT={sbx.hub.url}", f"EXPECTED_SAFE_TENSOR_COUNT={weights}",
              "", "# exo", f"EXO_API_PORT={EXO_API_PORT}", f"EXO_NAMESPACE=modeldrop-sbx{sbx.slot}",
              "", "# the suite's own files", f"PROFILE_PATH={profiles}",
              f"RUN_REPORT_DIR={sbx.report_dir}"]
    for n in sbx.nodes():
        lines += ["", f"# node {n.k}: {n.user}@{n.address} ({n.alias})", f"MODEL_DIR_NODE{n.k}={n.model_dir}",
                  f"HF_CMD_NODE{n.k}={n.hf_cmd}", f"EXO_CMD_NODE{n.k}={n.exo_cmd}",
                  f"EXO_LOG_DIR_NODE{n.k}={n.log_dir}"]
    return "\n".join(lines) + "\n"

"""Each node's EXO and `hf`: the EXO emulator or real EXO installed as its `exo`, and its emulator.json.

Contract: `pick_exo(asked, generation)` is real EXO where this machine can build it (`auto`), else the
emulator with a one-line note saying what is missing (`real` there is a SandboxError). `NodeExo.prepare`
copies sandbox/exo_emulator to `<root>/lib/exo_emulator` (a node runs that copy as `exo_emulator`) and,
for real EXO, builds or reuses the machine's install (a failed install removes every node's `exo`, so
no node looks healthy); `write_tools` writes node k's `hf` and `exo` (different absolute paths per
node, nothing on PATH); `write_config` writes node k's emulator.json: generation, addresses, the
addresses its cabling does not reach (`unreachable`, from `cabling`), and the fault switches and timing
overrides set with `set_faults` / `set_timing`, which `clear_switches` empties.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from sandbox.cabling import Cabling
from sandbox.exo_real import install as real_install
from sandbox.exo_real import node as real_node
from sandbox.layout import EXO_PATHS, Layout, NodeInfo, SandboxError, write_file
from sandbox.model import folder_name, model_card_toml

log = logging.getLogger("sandbox")

EMULATOR_SRC = Path(__file__).resolve().parent / "exo_emulator"
GENERATIONS = {"new": "0.3.70", "old": "1.0.71"}
EXO_CHOICES = ("auto", "real", "emulator")
RAM_TOTAL, RAM_AVAILABLE = 17179869184, 12884901888


def pick_exo(asked: str, generation: str) -> tuple[str, str]:
    """("real" | "emulator", note): `auto` is real EXO where this machine can build it, else the emulator
    with a one-line note saying what is missing; `real` where it cannot is a SandboxError."""
    if asked not in EXO_CHOICES:
        raise SandboxError(f"exo must be one of {', '.join(EXO_CHOICES)}, got {asked!r}")
    if asked == "emulator":
        return "emulator", ""
    missing = real_install.missing_inputs(generation)
    if not missing:
        return "real", ""
    line = f"real EXO ({generation}) is not available here (missing {'; '.join(missing)})"
    if asked == "real":
        raise SandboxError(line + "; use the emulator (--sandbox-exo emulator)")
    return "emulator", line + ": using the EXO emulator"


def check_generation(generation: str) -> str:
    """`generation` when it is `new` or `old`, else a SandboxError."""
    if generation not in GENERATIONS:
        raise SandboxError(f"generation must be one of {sorted(GENERATIONS)}, got {generation!r}")
    return generation


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


def copy_emulator(lib: Path) -> None:
    """Re-copy sandbox/exo_emulator to `lib/exo_emulator` (world-readable), swapped in by rename."""
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


class NodeExo:
    """The nodes' EXO (`kind`: "emulator" or "real") of one generation, and each node's emulator.json."""

    def __init__(self, lay: Layout, generation: str, kind: str, preinstall_card: bool = False) -> None:
        self.lay, self.generation, self.kind, self.preinstall_card = lay, generation, kind, preinstall_card
        self.faults: dict[int, dict[str, Any]] = {}
        self.timing: dict[int, dict[str, Any]] = {}
        self.exo_text: dict[int, str] = {}  # node k's exo entry point as written last
        self.cabling = Cabling(lay.n_nodes)
        self.real: Any = None  # the real-EXO Install once prepare() has it

    # -- installs ------------------------------------------------------------------------------------
    def prepare(self, model_info: dict[str, Any] | None) -> None:
        """The emulator's copy in <root>/lib, and for real EXO its install (see the module doc)."""
        copy_emulator(self.lay.lib_dir)
        self._prepare_real(model_info)

    def _prepare_real(self, model_info: dict[str, Any] | None) -> None:
        """For real EXO: the cached install (built on first use, its time logged), the stand-ins and node
        shim in <root>/lib/exo_real, and (preinstall_card) EXO's resources with the model's card."""
        if self.kind != "real":
            self.real = None
            return
        if real_install.current(self.generation) is None:
            log.warning("building real EXO (%s) once for this machine; several minutes", self.generation)
        try:
            self.real = real_install.ensure_install(self.generation)
        except real_install.InstallError as e:
            for k in range(1, self.lay.n_nodes + 1):
                (self.lay.node_home(k) / EXO_PATHS[k]).unlink(missing_ok=True)
            raise SandboxError(str(e)) from None
        if self.real.built_s is not None:
            log.warning("real EXO (%s) built in %.0fs (cached from now on)", self.generation, self.real.built_s)
        real_node.stage_node_files(self.lay.lib_dir / "exo_real")
        if self.preinstall_card:
            card = real_node.card_for_generation(model_card_toml(model_info or {}), self.generation)
            real_node.resources_with_card(self.real, self.lay.root / "exo-resources",
                                          f"{folder_name(self.lay.model_id)}.toml", card)

    # -- each node's tools ---------------------------------------------------------------------------
    def write_tools(self, n: NodeInfo, bin_dir: Path) -> None:
        """node k's `hf` and `exo` scripts (see HF_PATHS / EXO_PATHS)."""
        q = shlex.quote
        hf = ["#!/bin/sh",
              f"# hf CLI of sandbox node {n.k}: wraps the node venv's hf (not on PATH, like a real install)",
              ': "${HF_HUB_DISABLE_UPDATE_CHECK:=1}"; export HF_HUB_DISABLE_UPDATE_CHECK',
              ': "${HF_HUB_DISABLE_TELEMETRY:=1}"; export HF_HUB_DISABLE_TELEMETRY']
        exo_env = {"TMPDIR": str(self.lay.node_tmp(n.k)),  # each node is its own machine: its own temp dir
                   "EXO_EMULATOR_CONFIG": str(n.emulator_config), "PYTHONPATH": str(self.lay.lib_dir)}
        if self.lay.mode == "local":  # a local node's "home" is a folder of the sandbox
            hf.append(f': "${{HF_HOME:={q(str(n.home / ".cache/huggingface"))}}}"; export HF_HOME')
            exo_env["HOME"] = str(n.home)
        hf.append(f'exec {q(str(bin_dir / "hf"))} "$@"')
        exo = self._real_entry_point(n) if self.kind == "real" else exo_entry_point(bin_dir / "python", n.k, exo_env)
        write_file(n.hf_cmd, "\n".join(hf) + "\n", 0o755)
        write_file(n.exo_cmd, exo, 0o755)
        self.exo_text[n.k] = exo

    def write_homebrew(self, k: int) -> Path:
        """node k's exo also as a Homebrew-style install: `<node dir>/homebrew/bin/exo`, which node k sees as
        /opt/homebrew/bin/exo (root-owned like a Homebrew prefix; the same entry point as its own `exo`)."""
        prefix = self.lay.homebrew_dir(k)
        for d in (prefix, prefix / "bin"):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
            d.chmod(0o755)
        target = prefix / "bin" / "exo"
        write_file(target, self.exo_text[k], 0o755)
        return target

    def _real_entry_point(self, n: NodeInfo) -> str:
        """node k's `exo` running real EXO (sandbox/exo_real/node.py), bound to the node's own address."""
        env = {"TMPDIR": str(self.lay.node_tmp(n.k)), "MODELDROP_EXO_NODE_ADDRESS": n.address,
               "MODELDROP_EXO_PEER_ADDRESSES": ",".join(self.lay.addresses()),
               "MODELDROP_EXO_NODE_HOME": str(n.home)}
        if self.lay.mode == "local":
            env["HOME"] = str(n.home)
        if self.preinstall_card:  # off by default: the canary adds the card itself (POST /models/add)
            env["EXO_RESOURCES_DIR"] = str(self.lay.root / "exo-resources")
        return real_node.entry_point(self.real, n.k, env, self.lay.lib_dir / "exo_real", n.emulator_config)

    # -- emulator.json -------------------------------------------------------------------------------
    def config(self, k: int) -> dict[str, Any]:
        """node k's emulator.json (the agreed schema; see sandbox/exo_emulator/README.md)."""
        return {"generation": self.generation, "version": GENERATIONS[self.generation],
                "node_address": self.lay.address(k), "peer_addresses": self.lay.addresses(),
                "unreachable": [self.lay.address(j) for j in self.cabling.unreachable(k)],
                "friendly_name": f"sbx-node{k}", "ram_total_bytes": RAM_TOTAL,
                "ram_available_bytes": RAM_AVAILABLE, "layout": "linux",
                "faults": self.faults.get(k, {}), "timing": self.timing.get(k, {}),
                "hf_endpoint": self.lay.hub_url}

    def write_config(self, k: int) -> None:
        write_file(self.lay.node(k).emulator_config, json.dumps(self.config(k), indent=2) + "\n")

    def clear_switches(self) -> None:
        """No fault switches and no timing overrides (written at each node's next write_config)."""
        self.faults.clear()
        self.timing.clear()

    def set_generation(self, generation: str) -> None:
        """Every node's emulator.json to `new` or `old`."""
        self.generation = check_generation(generation)
        for k in range(1, self.lay.n_nodes + 1):
            self.write_config(k)

    def set_cabling(self, cabling: Cabling) -> None:
        """Every node's emulator.json to this cabling (each EXO reads it when it starts)."""
        self.cabling = cabling
        for k in range(1, self.lay.n_nodes + 1):
            self.write_config(k)

    def set_faults(self, k: int, faults: dict[str, Any]) -> None:
        """Replace node k's fault switches (the `faults` object of emulator.json)."""
        self.faults[self.lay.check_node(k)] = dict(faults)
        self.write_config(k)

    def set_timing(self, k: int, timing: dict[str, Any]) -> None:
        """Replace node k's timing overrides (`timing` of emulator.json, e.g. hello_s)."""
        self.timing[self.lay.check_node(k)] = dict(timing)
        self.write_config(k)

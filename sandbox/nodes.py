"""Each node's folders and files, and its processes.

Contract: `make_home` lays out node k's home as exo's Linux layout expects (models, custom cards, cache
and config dirs, logs) and its own temp dir, with no model card pre-installed; `hand_over` gives the
home to the node user. `reset_files` wipes what a run leaves (model dir, exo state, HF cache, logs, temp
dir); `populate_model` copies a complete `hf download` into a node. `node_pids` are node k's processes:
its user's (SSH mode) and any exo whose environment names the node; `stop_processes` stops each by pid.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from sandbox.layout import Layout, NodeInfo, SandboxError, chown_tree
from sandbox.model import folder_name
from sandbox.procs import cmdline, environ_has, is_zombie, processes, stop_pid
from sandbox.users import owner


def make_home(lay: Layout, n: NodeInfo, uid: int, gid: int) -> None:
    """Node k's folder, home, exo dirs and temp dir; a card left by an earlier sandbox is removed."""
    node_dir = n.home.parent
    node_dir.mkdir(parents=True, exist_ok=True)
    node_dir.chmod(0o755)
    n.home.mkdir(exist_ok=True)
    for d in (lay.exo_models_dir(n.k), n.home / ".local/share/exo/custom_model_cards",
              n.home / ".cache/exo", n.home / ".config/exo", n.log_dir):
        d.mkdir(parents=True, exist_ok=True)
    lay.node_tmp(n.k).mkdir(mode=0o700, exist_ok=True)
    os.chown(lay.node_tmp(n.k), uid, gid)
    # no card is pre-installed: EXO meets the model as a new drop (the canary adds the card); a card
    # left by an earlier sandbox that did pre-install one is removed so every session starts card-less
    (n.home / ".local/share/exo/custom_model_cards" / f"{folder_name(lay.model_id)}.toml").unlink(missing_ok=True)


def hand_over(n: NodeInfo, uid: int, gid: int) -> None:
    """Everything in node k's home to its user; the home itself readable by others (755)."""
    chown_tree(n.home, uid, gid)
    n.home.chmod(0o755)


def reset_files(lay: Layout, k: int) -> None:
    """Wipe node k's model dir, exo state (cache, config, event log), HF cache, logs and temp dir."""
    n = lay.node(k)
    exo_data = n.home / ".local/share/exo"
    for p in (n.model_dir, exo_data / "event_log", exo_data / "models" / "caches", n.home / ".cache/exo",
              n.home / ".config/exo", n.home / ".cache/huggingface", n.log_dir):
        shutil.rmtree(p, ignore_errors=True)
    shutil.rmtree(lay.node_tmp(k), ignore_errors=True)
    for d in (lay.exo_models_dir(k), n.home / ".cache/exo", n.home / ".config/exo", n.log_dir):
        d.mkdir(parents=True, exist_ok=True)
    lay.node_tmp(k).mkdir(mode=0o700)
    for d in (n.home / ".local", n.home / ".cache", n.home / ".config", n.log_dir, lay.node_tmp(k)):
        chown_tree(d, *owner(lay, k))


def populate_model(lay: Layout, k: int, dest: Path, src: Path) -> Path:
    """Copy the download `src` (with .cache/huggingface) to `dest` on node k, replacing what is there;
    new folders and files are owned by the node user. Returns `dest`."""
    if not (src / "config.json").exists():
        raise SandboxError(f"{src} holds no download (no config.json); run up() first")
    uid, gid = owner(lay, k)
    missing = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
    for p in reversed(missing):
        p.mkdir()
        os.chown(p, uid, gid)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, symlinks=True)
    chown_tree(dest, uid, gid)
    return dest


def node_pids(lay: Layout, k: int) -> list[int]:
    """Live processes of node k: its user's (SSH mode) and any exo of its config (emulator or real EXO)."""
    needle = f"EXO_EMULATOR_CONFIG={lay.node(k).emulator_config}"
    real = f"MODELDROP_EXO_NODE_HOME={lay.node_home(k)}"
    uid = owner(lay, k)[0] if lay.mode == "ssh" else None
    me = os.getpid()
    return [pid for pid, _, puid in processes() if pid != me and not is_zombie(pid)
            and (puid == uid or environ_has(pid, needle) or environ_has(pid, real))]


def stop_processes(lay: Layout, k: int, timeout: float = 5.0) -> list[str]:
    """Stop every process of node k (see `node_pids`), by pid; returns what was stopped."""
    stopped = []
    for pid in node_pids(lay, k):
        line = cmdline(pid) or "?"
        if stop_pid(pid, [line[:40]] if line != "?" else [], timeout):
            stopped.append(f"node{k} pid {pid}: {line[:80]}")
    return stopped


def stop_extra_nodes(lay: Layout, recorded_sshd: dict[str, dict]) -> None:
    """Stop the sshds and user processes of nodes a previous, larger up() started."""
    for k_str, rec in recorded_sshd.items():
        if int(k_str) > lay.n_nodes:
            stop_pid(rec.get("pid"), ["sshd", rec.get("config", "?")])
            try:
                uid = pwd.getpwnam(f"mdsb{lay.slot}n{k_str}").pw_uid
            except KeyError:
                continue
            for pid, _, puid in processes():
                if puid == uid:
                    stop_pid(pid, [])

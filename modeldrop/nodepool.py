"""NodePool: the run's Node objects, made lazily from the RunConfig and closed once at the end.

One SSH connection per node for the whole session: every gate, fixture and plugin hook asks the
pool for `pool.get(k)` instead of connecting itself.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from modeldrop.config import RunConfig
from modeldrop.nodes import LocalNode, Node
from modeldrop.ssh import SSHNode


def make_node(name: str, target: str, **ssh_options: Any) -> Node:
    """LocalNode for target 'local' (only python_cmd is used from the options), else SSHNode."""
    if target == "local":
        return LocalNode(name, python_cmd=ssh_options.get("python_cmd"))
    return SSHNode(name, target, **ssh_options)


class NodePool:
    """Lazily connected nodes of one run, keyed by 1-based index."""

    def __init__(self, cfg: RunConfig, run_id: str | None = None):
        self.cfg = cfg
        self.run_id = run_id  # named in the node-side records of long work (see nodes.py)
        self._nodes: dict[int, Node] = {}
        self._lock = threading.Lock()

    def get(self, k: int) -> Node:
        """Node k (1-based), created on first use with the run's SSH settings."""
        with self._lock:
            if k not in self._nodes:
                nc = self.cfg.node(k)
                self._nodes[k] = make_node(
                    nc.name, nc.target,
                    ssh_config=Path(self.cfg.ssh_config).expanduser(),
                    known_hosts=Path(self.cfg.ssh_known_hosts).expanduser(),
                    accept_new_host_keys=bool(self.cfg.accept_new_host_keys),
                    python_cmd=nc.python_cmd,
                )
                self._nodes[k].run_id = self.run_id
            return self._nodes[k]

    def all(self) -> dict[int, Node]:
        """Every configured node, created if needed."""
        return {n.index: self.get(n.index) for n in self.cfg.nodes}

    def opened(self) -> dict[int, Node]:
        """Only the nodes already created (for transcripts and closing)."""
        with self._lock:
            return dict(self._nodes)

    def close(self) -> None:
        """Close every node that was opened."""
        for node in self.opened().values():
            node.close()

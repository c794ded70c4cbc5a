"""Fakes for the EXO layer's unit tests: a node that answers probes from tables, a run folder, a config."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NEW_HELP = """usage: exo [-h] [-q] [-v] [-m] [--no-api] [--api-port API_PORT] [--no-worker] [--no-downloads]
  [--offline] [--namespace NAMESPACE] [--zenoh-port ZENOH_PORT] [--discovery-port DISCOVERY_PORT]
  [--fast-synch | --no-fast-synch]
options:
  --api-port API_PORT
  --namespace NAMESPACE  discovery namespace (default: 0.3.70)
  --zenoh-port ZENOH_PORT
"""
OLD_HELP = """usage: exo [-h] [-q] [-v] [-m] [--no-api] [--api-port API_PORT] [--no-worker] [--no-downloads]
  [--offline] [--bootstrap-peers BOOTSTRAP_PEERS] [--libp2p-port LIBP2P_PORT] [--version]
  [--fast-synch | --no-fast-synch]
options:
  --api-port API_PORT
  --version  show program's version number and exit
"""


@dataclass
class FakeNode:
    help_text: str = NEW_HELP
    version_text: str = "exo 1.0.71\n"
    platform: str = "darwin"
    home: str = "/Users/me"
    addr: str = "10.0.0.1"
    port_free: bool = True
    holders: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    procs_by_pid: dict = field(default_factory=dict)
    exo_procs: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    next_pid: int = 4242
    mlx: str | None = "0.30.1"
    os_version: str = "26.1"

    def address(self) -> str:
        return self.addr

    def run_probe(self, name: str, args: dict, *, timeout: float = 60) -> dict:
        self.calls.append((name, args))
        return getattr(self, f"_p_{name}")(args)

    def _p_tool(self, a):
        text = self.version_text if a["args"] == ["--version"] else self.help_text
        return {"exists": True, "executable": True, "realpath": "/real" + a["path"], "rc": 0, "stdout_head": text,
                "stderr_head": "", "error": None}

    def _p_facts(self, a):
        return {"platform": self.platform, "home": self.home, "user": "me", "os_version": self.os_version,
                "python_version": "3.9.6", "hostname": f"mac-{self.addr}", "boot_id": "boot-1"}

    def facts(self, *, refresh: bool = False, timeout: float = 30) -> dict:
        return self.run_probe("facts", {}, timeout=timeout)

    def _p_runtime(self, a):
        return {"exo_realpath": "/real" + a["exo_cmd"], "mlx": self.mlx, "python": "3.12" if self.mlx else None}

    def _p_ports(self, a):
        return {"free": self.port_free, "listening_on": [] if self.port_free else ["127.0.0.1"],
                "holders": self.holders}

    def _p_tail(self, a):
        t = self.files.get(a["path"])
        return {"exists": t is not None, "text": t or "", "expanded": a["path"], "size": len(t or "")}

    def _p_procs(self, a):
        if a.get("pids") is not None:
            return {"procs": [self.procs_by_pid[p] for p in a["pids"] if p in self.procs_by_pid]}
        return {"procs": list(self.exo_procs)}

    def _p_exos(self, a):
        """exo_procs as the `exos` probe answers: every row this user's exo on the default port unless it says."""
        defaults = {"ppid": 1, "uid": 501, "user": "me", "own": True, "form": "console script", "api_port": 52415,
                    "port_from": "default", "serving": False, "parent": None}
        return {"exos": [{**defaults, "program": p.get("exe"), **p} for p in self.exo_procs]}

    def _p_fs(self, a):
        if "ops" in a:  # the batch form: one round trip, each operation answered like the single form
            return {"ok": True, "results": [{"ok": True, "expanded": path} for _, path in a["ops"]]}
        return {"ok": True, "expanded": a["path"]}

    def _p_spawn(self, a):
        pid = self.next_pid
        self.next_pid += 1
        self.procs_by_pid[pid] = {"pid": pid, "ppid": 1, "start": 1000.0, "exe": a["argv"][0], "cmdline": a["argv"]}
        return {"pid": pid, "start": 1000.0, "log_path": a["log_path"], "exe": "/real/python3"}

    def _p_stop(self, a):
        gone = self.procs_by_pid.pop(a["pid"], None)
        return {"result": "stopped-term" if gone else "gone", "detail": ""}

    def _p_sockets(self, a):
        return {"sockets": []}

    def probes(self, name: str) -> list[dict]:
        """The args of every call of probe `name`; a batch `fs` call counts as its single operations."""
        out: list[dict] = []
        for n, a in self.calls:
            if n == name:
                out += [{"op": op, "path": path} for op, path in a["ops"]] if "ops" in a else [a]
        return out


class FakeRunFolder:
    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def write_json(self, rel: str, obj: Any) -> Path:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(obj))
        return p

    def write_text(self, rel: str, s: str) -> Path:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(s)
        return p


class FakePool:
    """A NodePool over fake nodes ({k: node})."""

    def __init__(self, nodes: dict):
        self.nodes = nodes

    def get(self, k: int) -> Any:
        return self.nodes[k]


def make_cfg(tmp_path: Path, n: int = 2, **values: Any):
    from modeldrop.config import load_config
    env = {"MODEL_ID": "mlx-community/Llama-3.2-1B-Instruct-4bit",
           "NODES": ",".join(f"u@h{k}" for k in range(1, n + 1)),
           "RUN_REPORT_DIR": str(tmp_path / "reports"), "PROFILE_PATH": str(tmp_path / "none.json"),
           "EXO_CMD": "~/exo/.venv/bin/exo"}
    env.update({k: str(v) for k, v in values.items()})
    return load_config({}, environ=env)


class FakeClock:
    """A monotonic clock the test moves: call it for the time, `sleep(s)` advances it."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s

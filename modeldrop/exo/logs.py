"""exo's files per layout, log tails fetched from nodes, and the catalog's log regexes.

Layout: macOS (any non-Linux OS) keeps config, data and cache in `~/.exo`;
Linux uses XDG (`~/.config/exo`, `~/.local/share/exo`, `~/.cache/exo`). The main log is
`<cache>/exo_log/exo.log` (rotated at each start, so it holds the current run only), runner stdio
`<cache>/exo_log/runner_log/{stdout,stderr}.log`, the pid lock `<cache>/exo.pid`, the first-run
marker `<config>/.dashboard_opened`. The suite also captures exo's stdout/stderr to its own file in
EXO_LOG_DIR_NODEk: the fatal startup `ValueError`s go to stderr only.

Scanning covers both files: `logs_of(node, paths)` returns their tails, read in one round trip. Only this run's lines
count: the launcher records where each log stood when it launched exo (`LaunchRecord.log_marks`: inode and
size), and a tail with that mark reads only what was written after it (all of a file started afresh since),
so a previous run's exo.log, or the start-up window before exo rotates it, is never read as this run's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_TAIL_BYTES = 256 * 1024
TAIL_TIMEOUT_S = 60.0


class ProbeNode(Protocol):
    def run_probe(self, name: str, args: dict, *, timeout: float) -> dict: ...


@dataclass(frozen=True)
class ExoPaths:
    """exo's home dirs on one node, as `~/...` strings (the probes expand `~`)."""

    config_home: str
    data_home: str
    cache_home: str

    @property
    def log_file(self) -> str:
        return f"{self.cache_home}/exo_log/exo.log"

    @property
    def runner_stderr(self) -> str:
        return f"{self.cache_home}/exo_log/runner_log/stderr.log"

    @property
    def pid_file(self) -> str:
        return f"{self.cache_home}/exo.pid"

    @property
    def first_run_marker(self) -> str:
        return f"{self.config_home}/.dashboard_opened"

    @property
    def models_dir(self) -> str:
        return f"{self.data_home}/models"


def exo_paths(platform: str) -> ExoPaths:
    """Paths for a node whose `facts.platform` is `platform` ('darwin', 'linux', ...)."""
    if platform == "linux":
        return ExoPaths("~/.config/exo", "~/.local/share/exo", "~/.cache/exo")
    return ExoPaths("~/.exo", "~/.exo", "~/.exo")


def tails(node: ProbeNode, paths: list[str], max_bytes: int = DEFAULT_TAIL_BYTES,
          marks: dict[str, dict] | None = None, match: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The `tail` probe's result for each path, in one round trip (each read after its mark in `marks`, when it has
    one; only the lines matching `match`, when given); [] when the node cannot be asked."""
    args: dict[str, Any] = {"files": [{"path": p, "mark": (marks or {}).get(p)} for p in paths],
                            "max_bytes": max_bytes}
    if match:
        args["match"] = [RX[name].pattern for name in match]
    try:
        return list(node.run_probe("tail", args, timeout=TAIL_TIMEOUT_S)["files"])
    except Exception:  # noqa: BLE001 - a missing log must not hide the real failure
        return []


def logs_of(node: ProbeNode, paths: list[str], max_bytes: int = DEFAULT_TAIL_BYTES,
            marks: dict[str, dict] | None = None, match: tuple[str, ...] = ()) -> dict[str, str]:
    """{path: tail} for each path that exists and has text (see `tails`)."""
    return {p: str(r["text"]) for p, r in zip(paths, tails(node, paths, max_bytes, marks, match), strict=False)
            if r.get("exists") and r.get("text")}


# -- the failure catalog's log regexes ---------------------------------------------------------
RX = {name: re.compile(rx) for name, rx in {
    "NS_LINE": r"EXO_(LIBP2P|ZENOH)_NAMESPACE: (?P<ns>\S+)",
    "NS_REMOVED": r"EXO_LIBP2P_NAMESPACE has been removed - use EXO_ZENOH_NAMESPACE instead",
    "BOOTSTRAP_GONE": r"Bootstrap peers has been temporarily removed",
    "SELF_MASTER": r"Node elected Master( - (maintaining|promoting) self)?",
    "OTHER_MASTER": r"Node (?P<id>\S+) elected master",
    "API_UP": r"Running on http://0\.0\.0\.0:(?P<port>\d+)",
    "NODE_TIMEOUT": r"Manually removing node (?P<id>\S+) due to inactivity",
    "NACK_LOOP": r"Nack attempt (?P<n>\d+): Requesting Event Log from (?P<idx>\d+)",
    "PORT_IN_USE": r"(?i)(\[Errno (48|98)\]|address already in use)",
    "PIDFILE": r"PidfileError",
    "PL_NO_MEM": r"No cycles found with sufficient memory",
    "PL_NODE_MEM": r"Node \d+ \((?P<id>[^)]+)\) has insufficient memory",
    "PL_NO_TP_MODEL": r"Requested Tensor sharding but this model does not support tensor parallelism",
    "PL_TP_DIVIS": r"No tensor sharding found for model with hidden_size=\d+",
    "PL_NO_RDMA": r"Requested RDMA \(MlxJaccl\) but no RDMA-connected cycles available",
    "PL_JACCL_A2A": r"Current jaccl backend requires all-to-all RDMA connections",
    "PL_JACCL_COMM": r"Current jaccl backend requires all participating devices to be able to communicate",
    "PL_RING_CONN": r"MLX ring backend requires connectivity between neighbouring nodes",
    "PL_PIPE_UNSUP": r"Pipeline parallelism is not supported for ",
    "PL_LAYERS": r"Cannot distribute \d+ layers across \d+ nodes",
    "PL_INSUFF_API": r"Insufficient memory to create instance",
    "PL_CARD": r"Failed to load model card",
    "PL_ONE_NEW": r"Expected exactly one new instance from placement",
    "PL_CMD_ERR": r"Error in command processor",
    "OFFLINE_ON": r"Running in OFFLINE mode",
    "OFFLINE_MISSING": (r"(Offline mode: model \S+ is not fully available locally"
                        r"|Model files not found locally in offline mode)"),
    "OFFLINE_FILE": (r"(not found locally and cannot download in offline mode"
                     r"|No internet connection and no cached file list)"),
    "NO_INSTANCE": r"No instance found for model (?P<model>\S+)",
    "RUNNER_CRASH": r"Runner (?P<rid>\S+) crashed with critical exception (?P<exc>.+)",
    "RUNNER_TERM": r"Runner terminated with (signal=(?P<sig>\d+)( \((?P<sigdesc>[^)]*)\))?|exitcode=(?P<rc>-?\d+))",
    "RUNNER_KILLED": r"Terminated \(signal=9|signal=9 \(Killed: 9\)",
    "RUNNER_MIDREQ": r"Runner shutdown before completing command",
    "INST_RETRIES": r"Instance (?P<iid>\S+) exceeded \d+ retries, requesting deletion",
    "HOSTFILE_LINE": r"rank (?P<rank>\d+) hostfile: (?P<path>\S+) hosts: (?P<hosts>\[.*?\])",
    "COORD_LINE": r"rank (?P<rank>\d+) MLX_JACCL_COORDINATOR: (?P<addr>\S+)",
    "RING_CONNECT": r"\[ring\] Couldn't connect \(error: (?P<errno>\d+)\)",
    "RING_BIND": r"\[ring\] Couldn't bind socket \(error: (?P<errno>\d+)\)",
    "RING_RECV": r"(?i)\[ring\]\s+Receiving\s+from\s+socket\s+\d+\s+failed\s+with\s+errno\s+(?P<errno>\d+)",
    "RING_ABORT": r"(?i)\[ring\]\s+Too\s+many\s+send/recv\s+errors\.\s+Aborting",
    "JACCL_CONNECT": r"\[jaccl\] Couldn't connect \(error: (?P<errno>\d+)\)",
    "METAL_TIMEOUT": r"(?i)\[METAL\].*GPU\s+Timeout",
    "HF_429": r"(Rate limited by HuggingFace|HuggingFace rate limit hit|because of HuggingFace rate limit)",
    "DL_FAILED": r"Download failed for (?P<model>\S+): ",
}.items()}


def find(name: str, text: str) -> list[re.Match]:
    """Every match of catalog regex `name` in text."""
    return list(RX[name].finditer(text or ""))


def line_of(text: str, m: re.Match, limit: int = 400) -> str:
    """The whole log line that holds match `m`, stripped and cut to `limit` characters."""
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    return text[start:end if end >= 0 else len(text)].strip()[:limit]


def first_line(name: str, text: str) -> str | None:
    """The full log line of the first match of `name`, or None."""
    m = RX[name].search(text or "")
    return line_of(text, m) if m else None


@dataclass(frozen=True)
class HostfileLine:
    rank: int
    path: str
    hosts: list[str]


# What the transport gate reads from the logs since launch, wherever it stands in them (`tail`'s `match`).
TRANSPORT_LINES = ("HOSTFILE_LINE", "COORD_LINE", "RING_CONNECT", "JACCL_CONNECT")


def hostfile_lines(text: str) -> list[HostfileLine]:
    """`rank r hostfile: <path> hosts: [...]` lines; hosts parsed as JSON (or a Python-ish list)."""
    out = []
    for m in RX["HOSTFILE_LINE"].finditer(text or ""):
        raw = m.group("hosts")
        try:
            hosts = json.loads(raw)
        except ValueError:
            hosts = [h.strip(" '\"") for h in raw.strip("[]").split(",") if h.strip()]
        out.append(HostfileLine(int(m.group("rank")), m.group("path"), [str(h) for h in hosts]))
    return out


def namespace_lines(text: str) -> list[str]:
    return [f"EXO_{m.group(1)}_NAMESPACE: {m.group('ns')}" for m in RX["NS_LINE"].finditer(text or "")]


def ring_connect_errors(text: str) -> list[int]:
    return [int(m.group("errno")) for m in RX["RING_CONNECT"].finditer(text or "")]


def jaccl_connect_errors(text: str) -> list[int]:
    """errno of every `[jaccl] Couldn't connect (error: N)` line (the JACCL coordinator unreachable)."""
    return [int(m.group("errno")) for m in RX["JACCL_CONNECT"].finditer(text or "")]


def joined(logs: dict[Any, str]) -> str:
    return "\n".join(logs.values())

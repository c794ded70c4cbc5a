"""Start and stop exo on a node exactly as configured, by pid, with an identity check.

`probe_build(node, exo_cmd)` runs `exo --help`: `--zenoh-port` present => NEW
(zenoh, `--namespace`), else OLD (libp2p, `EXO_LIBP2P_NAMESPACE`). The version comes from
`exo --version` when help offers it, else from the `--namespace` default shown in help (NEW's
default namespace is the package version), else None; `ExoBuild.version_source` says which.

`ExoLauncher(node, node_cfg, cfg, run_folder).start(role)` builds (see `command`):
  argv  EXO_CMD_NODEk --api-port EXO_API_PORT [--namespace NS (NEW)] [--libp2p-port EXO_LIBP2P_PORT (OLD, when
        its help lists it)] [EXO_EXTRA_ARGS…] [--no-fast-synch (EXO_SYNCH_FLAG)] [--offline] [--no-downloads] -v
        (EXO_CMD_NODEk unset: the exo found where exo installs to, `modeldrop.exo.installs`)
  env   EXO_MODELS_READ_ONLY_DIRS=<parent of MODEL_DIR_NODEk, absolute>
        EXO_LIBP2P_NAMESPACE=NS (OLD) | unset EXO_LIBP2P_NAMESPACE and EXO_BOOTSTRAP_PEERS (NEW: both fatal)
        EXO_ZENOH_NAMESPACE=NS (NEW: only logged by exo, but it puts the namespace in the log)
        EXO_OFFLINE=false with --online (so an inherited EXO_OFFLINE=true cannot flip it)
Models dir: exo searches EXO_MODELS_READ_ONLY_DIRS first and never deletes from them,
so pointing it at exactly the parent of the audited model dir makes exo use the audited files and
nothing else; the canary proves it by the `DownloadCompleted.modelDirectory` it reports.
EXO_DEFAULT_MODELS_DIR is deliberately NOT set: it is exo's *writable* dir (downloads, `DELETE
/download`, `nodeDisk`); setting it to the audited parent would either make that dir writable to
exo or, being in both lists, leave exo with no writable dir at all, and it adds nothing to what exo
sees because read-only dirs win the lookup. Paths are given absolute (`~` expanded with the
node's home): exo documents `~` expansion for EXO_DEFAULT_MODELS_DIR only.
Roles: the cluster runs with `--no-downloads` (the suite downloads; exo never does). The canary
runs `--offline` *without* `--no-downloads`: with `--no-downloads` there is no DownloadCoordinator,
hence no startup DownloadCompleted scan, and `/v1/models?status=downloaded` could never list the
model; offline already guarantees no download. The canary uses its own namespace
(`<ns>-canary`) so it stays alone even if exo from an earlier run still serves on other nodes.

Before starting, a foreign process on the API port, or exo's pid-file lock held by a live exo, is a
diagnosis (LaunchError), never a kill; `--stop-existing-exo` stops only this user's processes that run exo by
program (`modeldrop.exo.foreign`: EXO.app, Homebrew, uv tool, pipx, `uv run exo`, `python -m exo`, the configured
or looked-up exo), and lists them. Processes that an
earlier modeldrop run started (its launch records) are ours: they are stopped by pid. A record names the
node it was made on (target, hostname and boot id: `NodeIdentity`); a record of another node or another
boot, or older than RECORD_MAX_AGE_S, is void and never read. A record whose processes are found gone (or
stopped) is marked so in its file, atomically, and never tried again. When a record's leader is gone but its
process group lives on, the `stop` probe stops that group only if every member is proven ours (this user's,
in the leader's session, started at or after it, running the exo we launched); otherwise nothing is
signalled and the start records the refusal, which the canary and startup gates show as a warning.
Start is detached (probe `spawn`: new session, stdio to a file in EXO_LOG_DIR_NODEk), the first-run
marker is pre-created so no browser opens, and `<run_folder>/exo/node<k>-<role>.json` records pid,
start, log paths and the redacted command line. On macOS `caffeinate -i -s -w <pid>` keeps it awake.
`stop()` signals only the pid it started, after the start-time identity check (probe `stop`:
TERM to the process group, KILL after the grace period).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modeldrop import atomic, exo_flags
from modeldrop.config import NodeConfig, RunConfig
from modeldrop.exo import foreign
from modeldrop.exo.installs import ExoLookupError, exo_cmd_of
from modeldrop.exo.logs import ExoPaths, exo_paths
from modeldrop.hub import node_endpoint_problem
from modeldrop.nodes import url_host
from modeldrop.probes._proc import START_TOLERANCE_S
from modeldrop.redaction import redact, redact_mapping, secret_values

APP_EXO_PATHS = ("/Applications/EXO.app/Contents/Resources/exo/exo", "/Applications/EXO.app/Contents/MacOS/EXO")
STOP_GRACE_S = 15.0
PROBE_TIMEOUT_S = 60.0
HELP_TIMEOUT_S = 120.0
VERSION_TIMEOUT_S = 60.0
# probe_build's worst case: `--help` (its own limit + 30 s for the probe round trip), then `--version`
PROBE_BUILD_BUDGET_S = HELP_TIMEOUT_S + 30 + VERSION_TIMEOUT_S + 30
RECORD_MAX_RUNS = 50  # earlier run folders whose launch records are read
RECORD_MAX_AGE_S = 7 * 24 * 3600.0  # a launch record older than this is void
STOP_DONE = ("gone", "mismatch", "stopped-term", "stopped-kill")  # stop results after which a record is finished


class Node(Protocol):
    def run_probe(self, name: str, args: dict, *, timeout: float) -> dict: ...
    def address(self) -> str: ...


class RecordFolder(Protocol):
    """Where launch records go: the run folder (`modeldrop.ledger.runfolder.RunFolder`)."""

    path: Path

    def write_json(self, rel: str, obj: Any) -> Path: ...

    def write_text(self, rel: str, s: str) -> Path: ...


class LaunchError(Exception):
    """exo could not be started; the message is the diagnosis, `facts` feed the signature table."""

    def __init__(self, message: str, facts: dict | None = None):
        super().__init__(message)
        self.facts = facts or {}


@dataclass(frozen=True)
class ExoBuild:
    generation: str  # "new" | "old"
    version: str | None
    version_source: str | None  # "--version" | "namespace-default" | None
    help_sha: str
    exe_realpath: str | None
    exe: str = ""
    help_flags: tuple[str, ...] = ()  # every flag `exo --help` lists

    def label(self) -> str:
        return f"{self.generation.upper()} {self.version or 'version?'} ({self.exe_realpath or self.exe})"

    def identity(self) -> tuple:
        """What must be equal on every node: generation and version (help text when no version is known)."""
        return (self.generation, self.version) if self.version else (self.generation, self.help_sha)


def parse_help(text: str) -> tuple[str, str | None]:
    """(generation, namespace default shown by help or None) from `exo --help` output."""
    gen = "new" if "--zenoh-port" in text else "old"
    flat = re.sub(r"\s+", " ", text)
    m = re.search(r"--namespace\b[^-]*?default(?:s to|:|=| is)?\s*['\"]?v?(\d+\.\d+[\w.+-]*)", flat, re.I)
    return gen, (m.group(1).rstrip(".,)'\"") if m else None)


def parse_version(text: str) -> str | None:
    m = re.search(r"(\d+\.\d+\.\d+[\w.+-]*)", text or "")
    return m.group(1) if m else None


def probe_build(node: Node, exo_cmd: str, timeout_s: float = HELP_TIMEOUT_S) -> ExoBuild:
    """Identify the exo at exo_cmd on node; LaunchError when it is missing or `--help` fails."""
    r = node.run_probe("tool", {"path": exo_cmd, "args": ["--help"], "timeout": timeout_s}, timeout=timeout_s + 30)
    if not r.get("executable"):
        raise LaunchError(f"exo binary {exo_cmd} on this node: {r.get('error') or 'not executable'}")
    text = (r.get("stdout_head") or "") + (r.get("stderr_head") or "")
    if r.get("rc") != 0 or "--api-port" not in text:
        raise LaunchError(f"`{exo_cmd} --help` failed (rc={r.get('rc')}, {r.get('error') or ''}): {text[:300]!r}")
    gen, ns_default = parse_help(text)
    version, source = None, None
    if re.search(r"(^|\s)--version\b", text):
        v = node.run_probe("tool", {"path": exo_cmd, "args": ["--version"], "timeout": VERSION_TIMEOUT_S},
                           timeout=VERSION_TIMEOUT_S + 30)
        version = (parse_version((v.get("stdout_head") or "") + (v.get("stderr_head") or ""))
                   if v.get("rc") == 0 else None)
        source = "--version" if version else None
    if version is None and ns_default:
        version, source = ns_default, "namespace-default"
    return ExoBuild(gen, version, source, hashlib.sha256(text.encode()).hexdigest()[:16], r.get("realpath"), exo_cmd,
                    tuple(sorted(set(help_flags(text)))))


def help_flags(text: str) -> list[str]:
    """The flags an `exo --help` text lists (`-v`, `--no-fast-synch`, …)."""
    return re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text or "")


@dataclass(frozen=True)
class NodeIdentity:
    """The node a launch record was made on: its configured target, hostname and boot id (from `facts`)."""

    target: str
    hostname: str | None
    boot_id: str | None

    @property
    def known(self) -> bool:
        """All three are known (a record made where one is not can never be matched, so never acted on)."""
        return bool(self.target and self.hostname and self.boot_id)


def node_facts(node: Any) -> dict:
    """The node's `facts` probe, from its own cache when it has one."""
    cached = getattr(node, "facts", None)
    return cached(timeout=60) if callable(cached) else node.run_probe("facts", {}, timeout=60)


def node_identity(node: Any, target: str) -> NodeIdentity:
    """The identity of `node` (configured as `target`) as its facts tell it now."""
    facts = node_facts(node)
    return NodeIdentity(str(target), facts.get("hostname"), facts.get("boot_id"))


@dataclass
class LaunchRecord:
    """What was started: written to <run_folder>/exo/node<k>-<role>.json."""

    node: int
    role: str
    pid: int
    start: float | None
    exe: str
    argv: list[str]
    env: dict[str, str]
    unset_env: list[str]
    generation: str
    namespace: str
    api_url: str
    log_path: str
    exo_log_path: str
    runner_log_path: str
    started_at: float
    extra_pids: list[dict] = field(default_factory=list)
    stopped: dict | None = None
    stopped_existing: list[dict] = field(default_factory=list)
    node_target: str = ""
    node_host: str | None = None
    node_boot: str | None = None
    program: str | None = None  # the executable `spawn` saw the process run
    log_marks: dict[str, dict] = field(default_factory=dict)  # path -> {inode, size} when the launch began
    synch_flag: str | None = None  # EXO_SYNCH_FLAG as passed: `--no-fast-synch`, or `none (exo's default)`
    source: Path | None = field(default=None, compare=False, repr=False)  # the file it was read from

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return d

    @classmethod
    def from_json(cls, d: dict, source: Path | None = None) -> LaunchRecord:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "source"}
        return cls(**known, source=source)

    def made_on(self, ident: NodeIdentity) -> bool:
        """Was this record made on that node, in its current boot?"""
        return ident.known and (self.node_target, self.node_host, self.node_boot) == \
            (ident.target, ident.hostname, ident.boot_id)

    def mark_stopped(self, result: str, detail: str = "") -> None:
        """Record in its own file, atomically, that its processes are gone (never tried again)."""
        self.stopped = {"result": result, "detail": detail, "at": time.time()}
        if self.source is not None:
            atomic.write_json(self.source, self.to_json())


def api_addresses(node: Node) -> list[str]:
    """Where to connect-test the API port: the address the suite reaches the API at, plus 127.0.0.1 when that
    address is not itself a loopback address (exo binds 0.0.0.0, so a loopback-only listener blocks it too;
    nodes addressed by a loopback address, e.g. several on one host, each have their own)."""
    try:
        addr = node.address()
    except Exception:  # noqa: BLE001
        addr = None
    if not addr or addr == "localhost":
        return ["127.0.0.1"]
    return [addr] if addr.startswith("127.") or addr == "::1" else ["127.0.0.1", addr]


def probe_api_port(node: Node, port: int) -> dict:
    """The `ports` probe for exo's API port on the addresses exo would bind on this node."""
    return node.run_probe("ports", {"port": port, "addresses": api_addresses(node)}, timeout=PROBE_TIMEOUT_S)


def describe_holders(port_result: dict) -> str:
    """`pid N (command), …` of the processes holding a port, for a one-line diagnosis."""
    return ", ".join(f"pid {h['pid']} ({str(h.get('cmd', ''))[:120]})" for h in port_result.get("holders") or []) \
        or "a process this user cannot see"


def precheck_facts(problems: list[str]) -> dict:
    return {"port_held": any("API port" in p for p in problems),
            "pid_lock": any("pid-file lock" in p for p in problems)}


def expand_home(path: str, home: str) -> str:
    if path == "~":
        return home
    return home.rstrip("/") + path[1:] if path.startswith("~/") else path


def previous_records(report_dir: Path, exclude: Path | None, node_index: int, ident: NodeIdentity, *,
                     max_runs: int = RECORD_MAX_RUNS, max_age_s: float = RECORD_MAX_AGE_S) -> list[LaunchRecord]:
    """Launch records for node k made on that node in its current boot (`ident`), from the newest `max_runs`
    earlier run folders, younger than max_age_s, newest run first (for re-attach and cleanup).

    Every earlier run counts (a run that failed before starting exo has no records, and the cluster an
    older green run left serving is still ours); a record of another node or boot is void (its pids mean
    nothing here), and a record's pid is only ever signalled after the `stop` probe re-checks its start time."""
    if not report_dir.is_dir() or not ident.known:
        return []
    folders = sorted((p for p in report_dir.iterdir() if p.is_dir() and not p.is_symlink()
                      and (p / "exo").is_dir()), key=lambda p: p.name, reverse=True)[:max_runs]
    oldest = time.time() - max_age_s
    out = []
    for folder in folders:
        if exclude is not None and folder.resolve() == Path(exclude).resolve():
            continue
        for f in sorted((folder / "exo").glob(f"node{node_index}-*.json")):
            try:
                rec = LaunchRecord.from_json(json.loads(f.read_text()), source=f)
            except (OSError, ValueError, TypeError):
                continue
            if rec.made_on(ident) and float(rec.started_at or 0) >= oldest:
                out.append(rec)
    return out


class ExoLauncher:
    """Start/stop exo on one node; one launcher per (node, role)."""

    def __init__(self, node: Node, node_cfg: NodeConfig, cfg: RunConfig, run_folder: RecordFolder,
                 build: ExoBuild | None = None, facts: dict | None = None,
                 synch: Callable[[], exo_flags.SynchChoice] | None = None,
                 build_of: Callable[[], ExoBuild] | None = None):
        self.node = node
        self.node_cfg = node_cfg
        self.cfg = cfg
        self.run_folder = run_folder
        self._build = build
        self._build_of = build_of  # the run's shared build of this node (one `exo --help` per node and run)
        self._facts = facts
        self._synch = synch  # the cluster-wide EXO_SYNCH_FLAG decision (every node's `exo --help`)
        self.record: LaunchRecord | None = None
        self.stopped_existing: list[dict] = []

    # -- facts ------------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return int(self.node_cfg.index)

    def facts(self) -> dict:
        """The node's `facts` probe, from the node's own cache when it has one (one probe per node, not per
        launcher: the canary and the cluster launcher share it)."""
        if self._facts is None:
            self._facts = node_facts(self.node)
        return self._facts

    def identity(self) -> NodeIdentity:
        """This node as launch records name it."""
        facts = self.facts()
        return NodeIdentity(str(self.node_cfg.target), facts.get("hostname"), facts.get("boot_id"))

    def previous(self) -> list[LaunchRecord]:
        """This node's launch records from earlier runs (see `previous_records`)."""
        return previous_records(Path(self.cfg.report_dir), Path(str(self.run_folder.path)), self.k, self.identity())

    @property
    def exo_cmd(self) -> str:
        """The exo this node runs: EXO_CMD_NODEk, else the one found where exo installs to; LaunchError if none."""
        try:
            return exo_cmd_of(self.node, self.node_cfg, self.cfg.sources)
        except ExoLookupError as e:
            raise LaunchError(str(e)) from None

    def build(self) -> ExoBuild:
        if self._build is None:
            try:
                self._build = self._build_of() if self._build_of else probe_build(self.node, self.exo_cmd)
            except ExoLookupError as e:
                raise LaunchError(str(e)) from None
        return self._build

    def synch(self) -> exo_flags.SynchChoice:
        """EXO_SYNCH_FLAG as decided for the whole cluster (this node's own `--help` alone without a cluster)."""
        if self._synch is not None:
            return self._synch()
        return exo_flags.synch_choice(self.cfg.exo_synch_flag, {self.k: (self.build().exe, self.build().help_flags)})

    @property
    def paths(self) -> ExoPaths:
        return exo_paths(str(self.facts().get("platform") or "darwin"))

    @property
    def api_url(self) -> str:
        return f"http://{url_host(self.node.address())}:{self.cfg.api_port}"

    def namespace(self, role: str) -> str:
        return self.cfg.namespace if role == "cluster" else f"{self.cfg.namespace}-canary"[:64]

    def run_id(self) -> str:
        return Path(str(self.run_folder.path)).name

    # -- command ----------------------------------------------------------------------------------
    def command(self, role: str) -> tuple[list[str], dict[str, str], list[str]]:
        """(argv, env additions, env names to unset) for `role` ('canary' | 'cluster')."""
        build, ns = self.build(), self.namespace(role)
        home = str(self.facts().get("home") or "~")
        parent = expand_home(self.node_cfg.models_parent, home)
        argv = [self.exo_cmd, "--api-port", str(self.cfg.api_port)]
        env = {"EXO_MODELS_READ_ONLY_DIRS": parent}
        unset: list[str] = []
        if build.generation == "new":
            argv += ["--namespace", ns]
            env["EXO_ZENOH_NAMESPACE"] = ns
            unset += ["EXO_LIBP2P_NAMESPACE", "EXO_BOOTSTRAP_PEERS"]
        else:
            env["EXO_LIBP2P_NAMESPACE"] = ns
        if build.generation == "old" and self.cfg.libp2p_port and "--libp2p-port" in build.help_flags:
            argv += ["--libp2p-port", str(self.cfg.libp2p_port)]
        argv += list(self.cfg.exo_extra_args)  # the same on every node and in both roles
        argv += list(self.synch().args)  # EXO_SYNCH_FLAG: decided once for every node
        online = bool(self.cfg.online) and role == "cluster"
        if online:
            env["EXO_OFFLINE"] = "false"
            node_env = self.facts().get("hf_endpoint_env") if self.cfg.hf_token and not self.cfg.hf_endpoint else None
            refused = node_endpoint_problem(self.cfg.hf_endpoint, node_env, self.cfg.hf_token,
                                            self.cfg.allow_insecure_hub)
            if refused:
                raise LaunchError(f"{self.node_cfg.name}: exo not started online: {refused}")
            for key, value in (("HF_ENDPOINT", self.cfg.hf_endpoint), ("HF_TOKEN", self.cfg.hf_token)):
                if value:
                    env[key] = str(value)
        else:
            argv.append("--offline")
        if role == "cluster":
            argv.append("--no-downloads")
        argv.append("-v")
        return argv, env, unset

    # -- before start -----------------------------------------------------------------------------
    def _exo_exe_paths(self) -> list[str]:
        """The programs that are exo on this node: the one it runs, every install found, EXO.app's."""
        found = [f["path"] for f in self.facts().get("exo_installs") or []]
        try:
            mine = [self.exo_cmd]
        except LaunchError:
            mine = []
        return list(dict.fromkeys([*mine, *found, *APP_EXO_PATHS]))

    def stop_previous_runs(self) -> list[dict]:
        """Stop processes an earlier modeldrop run started on this node (its valid launch records), by pid after
        the identity check; a record whose processes are gone is marked so. Returns what was stopped or refused."""
        out: list[dict] = []
        done: dict[tuple, dict] = {}  # (pid, start) -> stop result: a re-attached record is copied into later runs
        for rec in self.previous():
            if rec.stopped:
                continue
            results = []
            for pid, start in [(rec.pid, rec.start)] + [(p["pid"], p.get("start")) for p in rec.extra_pids]:
                if start is None:
                    continue
                if (pid, start) not in done:
                    done[(pid, start)] = res = self.node.run_probe("stop", self._stop_args(rec, pid, start),
                                                                   timeout=STOP_GRACE_S + 60)
                    if res.get("result") not in ("gone", "mismatch"):
                        out.append({"pid": pid, "from_run": rec.log_path, "result": res.get("result"),
                                    "detail": res.get("detail")})
                results.append(done[(pid, start)].get("result"))
            if results and all(r in STOP_DONE for r in results):
                rec.mark_stopped("gone" if set(results) <= {"gone", "mismatch"} else "stopped-by-later-run")
        return out

    def _stop_args(self, rec: LaunchRecord, pid: int, start: float) -> dict:
        """The `stop` probe's arguments for a pid of launch record `rec` (the group of its leader only when every
        member is proven ours: see probe `stop`)."""
        args: dict[str, Any] = {"pid": pid, "expect_start": start, "grace_s": STOP_GRACE_S}
        if pid == rec.pid:
            args.update(orphans=True, expect_exes=[rec.program] if rec.program else [], expect_cmd=rec.exe)
        return args

    def _stop_existing(self, role: str) -> list[dict]:
        """--stop-existing-exo: this SSH user's processes that run exo by program (`foreign.scan`: never a match
        on argv alone), listed in the run folder (`found`) before any is stopped, then stopped by pid after the
        identity check; another user's are listed apart (`not_ours`), never signalled."""
        programs = self._exo_exe_paths()
        rows = foreign.scan(self.node, programs, api_addresses(self.node), self.cfg.api_port)
        secrets = secret_values(getattr(self.cfg, "values", None) or {})

        def shown(d: dict) -> dict:
            return {**d, "cmdline": [redact(str(a), secrets) for a in d.get("cmdline") or []]}
        self.run_folder.write_json(f"exo/node{self.k}-{role}-existing-exo.json",
                                   {"programs": programs, "found": [shown(r.to_json()) for r in rows if r.own],
                                    "not_ours": [shown(r.to_json()) for r in rows if not r.own]})
        return [{**shown(res), "detail": redact(str(res.get("detail") or ""), secrets)}
                for res in foreign.stop_own(self.node, rows, STOP_GRACE_S)]

    def _pidfile_holder(self) -> dict | None:
        r = self.node.run_probe("tail", {"path": self.paths.pid_file, "max_bytes": 64}, timeout=60)
        m = re.search(r"\d+", str(r.get("text") or "")) if r.get("exists") else None
        if not m:
            return None
        procs = self.node.run_probe("procs", {"pids": [int(m.group())], "exe_paths": None}, timeout=60)["procs"]
        for p in procs:
            names = [str(x) for x in ([p.get("exe")] + list(p.get("cmdline") or [])[:3]) if x]
            if any("exo" in Path(n).name.lower() or "exo" in n.lower().split("/") for n in names):
                return p
        return None

    def precheck(self, role: str = "cluster") -> list[str]:
        """Problems that forbid a start (API port held by another process, exo's pid lock held)."""
        self.stopped_existing = self.stop_previous_runs()
        if self.cfg.stop_existing_exo:
            self.stopped_existing += self._stop_existing(role)
        problems = []
        port = probe_api_port(self.node, self.cfg.api_port)
        if not port.get("free"):
            who = describe_holders(port)
            problems.append(f"{self.node_cfg.name}: API port {self.cfg.api_port} is already in use by {who}; "
                            f"not started by modeldrop, so it is not killed (stop it, or pass --stop-existing-exo "
                            f"if it is exo)")
        holder = self._pidfile_holder()
        if holder:
            problems.append(f"{self.node_cfg.name}: exo's pid-file lock {self.paths.pid_file} is held by live pid "
                            f"{holder['pid']} ({' '.join(holder.get('cmdline') or [])[:160]}); another exo runs "
                            f"with this user's cache dir (stop it, or pass --stop-existing-exo)")
        return problems

    # -- start / stop -----------------------------------------------------------------------------
    def _prepare_node(self, log_path: str) -> dict[str, dict]:
        """The first-run marker and the log dir made; returns where each log stood ({path: {inode, size}}), so
        only what this launch writes is read as its evidence (`exo.logs`)."""
        marker = self.paths.first_run_marker
        logs = [log_path, self.paths.log_file, self.paths.runner_stderr]
        res = self.node.run_probe("fs", {"ops": [["mkdir", marker.rsplit("/", 1)[0]], ["touch", marker],
                                                 ["mkdir", log_path.rsplit("/", 1)[0]],
                                                 *(["stat", p] for p in logs)]}, timeout=60)
        stats = (res.get("results") or [])[3:]
        return {p: {"inode": r.get("inode"), "size": r.get("size") or 0} for p, r in zip(logs, stats, strict=False)}

    def start(self, role: str = "cluster", precheck: bool = True) -> LaunchRecord:
        """Start exo detached as `role`; LaunchError with the diagnosis when it cannot be started."""
        problems = self.precheck(role) if precheck else []
        if problems:
            raise LaunchError("; ".join(problems), precheck_facts(problems))
        argv, env, unset = self.command(role)
        log_path = f"{self.node_cfg.exo_log_dir}/{self.run_id()}-node{self.k}-{role}.log"
        marks = self._prepare_node(log_path)
        res = self.node.run_probe("spawn", {"argv": argv, "env": env, "unset_env": unset, "cwd": "~",
                                            "log_path": log_path, "pid_file": None}, timeout=120)
        self.record = LaunchRecord(
            node=self.k, role=role, pid=int(res["pid"]), start=res.get("start"), exe=self.exo_cmd,
            argv=argv, env=redact_mapping(env), unset_env=unset, generation=self.build().generation,
            namespace=self.namespace(role), api_url=self.api_url, log_path=res.get("log_path") or log_path,
            exo_log_path=self.paths.log_file, runner_log_path=self.paths.runner_stderr, started_at=time.time(),
            stopped_existing=self.stopped_existing, program=res.get("exe"), log_marks=marks,
            synch_flag=self.synch().label)
        ident = self.identity()
        self.record.node_target, self.record.node_host, self.record.node_boot = ident.target, ident.hostname, \
            ident.boot_id
        if self.facts().get("platform") == "darwin":
            self._caffeinate()
        self.save()
        return self.record

    def _caffeinate(self) -> None:
        assert self.record is not None
        try:
            c = self.node.run_probe("spawn", {"argv": ["/usr/bin/caffeinate", "-i", "-s", "-w", str(self.record.pid)],
                                              "env": {}, "unset_env": [], "cwd": "~", "log_path": "/dev/null",
                                              "pid_file": None}, timeout=60)
            self.record.extra_pids.append({"pid": c["pid"], "start": c.get("start"), "what": "caffeinate"})
        except Exception:  # noqa: BLE001 - keeping the Mac awake is best effort
            pass

    def save(self) -> None:
        if self.record is not None:
            self.run_folder.write_json(f"exo/node{self.k}-{self.record.role}.json", self.record.to_json())

    def adopt(self, record: LaunchRecord) -> None:
        """Take over a process an earlier run started (re-attach), and record it in this run."""
        self.record = record
        self.save()

    def proc(self) -> dict | None:
        """The live process row of what we started if it is still the same process, else None."""
        if self.record is None:
            return None
        rows = self.node.run_probe("procs", {"pids": [self.record.pid], "exe_paths": None}, timeout=60)["procs"]
        for p in rows:
            if (self.record.start is None or p.get("start") is None
                    or abs(float(p["start"]) - float(self.record.start)) <= START_TOLERANCE_S):
                return p
        return None

    def stop(self) -> dict:
        """Stop what this launcher started (by pid, identity-checked); idempotent."""
        if self.record is None:
            return {"result": "not-started"}
        if self.record.stopped:
            return self.record.stopped
        args: dict[str, Any] = {"pid": self.record.pid, "grace_s": STOP_GRACE_S, "orphans": True,
                                "expect_exes": [self.record.program] if self.record.program else [],
                                "expect_cmd": self.record.exe}
        if self.record.start is not None:
            args["expect_start"] = self.record.start
        else:
            args["expect_exe"] = self.record.exe
        res = self.node.run_probe("stop", args, timeout=STOP_GRACE_S + 60)
        for extra in self.record.extra_pids:
            if extra.get("start") is not None:
                self.node.run_probe("stop", {"pid": extra["pid"], "expect_start": extra["start"], "grace_s": 5},
                                    timeout=60)
        self.record.stopped = {"result": res.get("result"), "detail": res.get("detail"), "at": time.time()}
        self.save()
        return self.record.stopped

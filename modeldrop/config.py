"""RunConfig: what a run is about, from options > environment > env file > model profile.

`OPTIONS` is the one table of settings: each has an env key (read from the environment and the
env file) and, for most, a command-line flag that the plugin registers. `load_config` validates
everything up front and raises `InputError` (one line, naming the input) before any node is
touched. Per-node keys (`MODEL_DIR_NODE2`, …) are env/env-file only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from modeldrop import envfile, exo_flags, profiles, statedirs, validate
from modeldrop.errors import InputError
from modeldrop.redaction import redact_mapping

MAX_NODES = 4
PER_NODE_KEYS = ("NODE", "MODEL_DIR_NODE", "HF_CMD_NODE", "EXO_CMD_NODE", "EXO_LOG_DIR_NODE", "PYTHON_CMD_NODE")
DEFAULT_ENV_FILE = Path("config/model_drop.env")


@dataclass(frozen=True)
class Option:
    """One setting: env key, optional CLI flag, kind ('str','bool','int','port','duration','choice','path'), default,
    help. `hf_env`: passed as is in the environment of every node's `hf` (the HF_* allow-list); `environ`: also read
    from this machine's environment (False for paths on the nodes: this shell's HF_HOME is not the nodes')."""

    key: str
    flag: str | None
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    hf_env: bool = False
    environ: bool = True


OPTIONS: tuple[Option, ...] = (
    Option("MODEL_ID", "--model", "str", None, "Hugging Face model id org/name"),
    Option("MODEL_INSTANCE_ID", None, "str", None,
           "the model's folder name org--name (optional; must equal MODEL_ID with '/' as '--')"),
    Option("NODES", "--nodes", "str", None, "comma-separated node targets: local, ssh alias, user@host[:port]"),
    Option("RUN_REPORT_DIR", "--report-dir", "str", None,
           "where run folders go (default: reports/ in a checkout, else the per-user data dir)"),
    Option("PROFILE_PATH", "--profile-path", "str", None,
           "model profiles file (default: model_profiles.json in the per-user config dir)"),
    Option("FAST", "--fast", "bool", False,
           "strict-only checks (counts, size plausibility, parity of non-weight files) become warnings"),
    Option("ONLINE", "--online", "bool", False,
           "exo online (default offline) and the hub's tree as the expected manifest"),
    Option("ALLOW_BLOCKED_MODEL", "--allow-blocked-model", "bool", False,
           "run a model whose profile status is blocked"),
    Option("VERIFY_HASHES", "--verify-hashes", "bool", False,
           "also check sha256 of every large file against the hub's etag"),
    Option("ACCEPT_NEW_HOST_KEYS", "--accept-new-host-keys", "bool", False,
           "accept and record SSH host keys not yet in known_hosts"),
    Option("PARALLEL_DOWNLOADS", "--parallel-downloads", "bool", False,
           "start the downloads of nodes 2..N with node 1's (each node still downloads from the hub); "
           "gates still report in order"),
    Option("KEEP_DOWNLOADING", "--keep-downloading", "bool", False,
           "with --parallel-downloads: a failed download does not stop the other nodes' downloads"),
    Option("TEARDOWN", "--teardown", "bool", False, "stop the cluster after a green run (default: leave it serving)"),
    Option("STOP_EXISTING_EXO", "--stop-existing-exo", "bool", False,
           "stop the SSH user's exo processes this run did not start (EXO.app, Homebrew, uv tool, pipx, "
           "`python -m exo`, `uv run exo`; matched by program, stopped by pid) before exo starts on each node"),
    Option("UPDATE_PROFILE", "--update-profile", "bool", False,
           "rewrite the model's profile row from this green bootstrap "
           "(default: a row is written once, later runs only report differences)"),
    Option("RESUME_BOOTSTRAP", "--resume-bootstrap", "bool", False, "skip gates that have a matching recent pass"),
    Option("AUDIT", "--audit", "bool", False,
           "preflight, verify and parity on the dirs as they are; no downloads, no exo"),
    Option("PASS_MAX_AGE", "--pass-max-age", "duration", 24 * 3600.0,
           "how old a cached gate pass may be to be reused (e.g. 6h)"),
    Option("CLUSTER_WINDOW_S", "--cluster-window", "duration", 60.0,
           "how long the cluster may show fewer than N nodes before the isolation fast stop"),
    Option("SETTLE_WINDOW_S", "--settle-window", "duration", 10.0,
           "how long exo must stay up without exits or restarts at startup"),
    Option("READY_TIMEOUT_S", "--ready-timeout", "duration", 600.0, "deadline for every runner to reach Ready"),
    Option("STALL_WINDOW_S", "--stall-window", "duration", 180.0,
           "how long a download may bring no new byte before it is stopped as stalled (the hub stopped answering; "
           "a slow link still brings bytes); also bounds each hub look-up, at most 60 s"),
    Option("CHAT_TIMEOUT_S", "--chat-timeout", "duration", 120.0,
           "how long one chat request of the chat gate may take in all, connect to last byte"),
    Option("CHAT_STALL_S", "--chat-stall-window", "duration", 30.0,
           "how long a chat stream may go without a new token before the chat gate calls it stalled"),
    Option("CHAT_SPREAD_MAX", "--chat-spread-max", "ratio", 3.0,
           "latency stability: the chat gate's short requests through each node may take at most this many times "
           "as long as the fastest of them (beyond it: a warning, or a stop with --chat-spread-stop)"),
    Option("CHAT_SPREAD_STOP", "--chat-spread-stop", "bool", False,
           "latency spread beyond --chat-spread-max fails the chat gate (default: a warning)"),
    Option("EXO_SHARDING", "--sharding", "choice", None,
           "placement sharding (default from the profile, else Pipeline)", ("Pipeline", "Tensor")),
    Option("EXO_INSTANCE_META", "--instance-meta", "choice", None,
           "placement transport (default from the profile, else MlxRing)", ("MlxRing", "MlxJaccl")),
    Option("HF_REVISION", "--revision", "str", "main", "hub revision to download and audit"),
    Option("HF_INCLUDE", None, "str", None,
           "hf download --include patterns, comma-separated (default from the profile)"),
    Option("EXPECTED_SAFE_TENSOR_COUNT", None, "int", None, "expected number of .safetensors files"),
    Option("EXPECTED_GGUF_COUNT", None, "int", None, "expected number of .gguf files"),
    Option("EXO_API_PORT", None, "port", 52415, "exo API port, the same on every node"),
    Option("EXO_NAMESPACE", None, "str", None, "exo discovery namespace (default modeldrop-<model folder>)"),
    Option("EXO_LIBP2P_PORT", None, "port", None,
           "libp2p TCP port for OLD (libp2p) exo, passed as --libp2p-port; NEW (zenoh) exo has none and ignores it"),
    Option("EXO_EXTRA_ARGS", None, "str", None,
           "extra exo flags, the same on every node (e.g. --no-batch); checked against `exo --help` at preflight"),
    Option("EXO_SYNCH_FLAG", "--exo-synch-flag", "choice", "auto",
           "the MLX fast-synch flag exo is started with, on the canary and every cluster node: auto (the guide's "
           "--no-fast-synch when every node's `exo --help` lists it, else none, said in one line per node), "
           "no-fast-synch or fast-synch (required: preflight stops on a node whose exo lacks it), exo-default "
           "(no flag: exo decides). Not EXO's own EXO_FAST_SYNCH environment variable",
           ("auto", "no-fast-synch", "fast-synch", "exo-default")),
    Option("HF_ENDPOINT", None, "str", None, "hub endpoint passed to hf on the nodes (default: the public hub)"),
    Option("HF_TOKEN", None, "str", None, "hub token passed to hf on the nodes; never logged"),
    Option("ALLOW_INSECURE_HUB", "--allow-insecure-hub", "bool", False,
           "send HF_TOKEN to a plain-http HF_ENDPOINT that is not loopback"),
    Option("HF_CMD", None, "str", "/opt/homebrew/bin/hf", "default hf binary for nodes without HF_CMD_NODEk"),
    Option("EXO_CMD", None, "str", None,
           "default exo binary for nodes without EXO_CMD_NODEk (default: looked up on each node where exo installs "
           "to: /opt/homebrew/bin, /usr/local/bin, EXO.app, ~/.local/bin of uv tool and pipx)"),
    Option("EXO_LOG_DIR", None, "str", "~/modeldrop-logs", "default dir on each node for exo's stdout/stderr"),
    Option("DISK_MARGIN_GB", None, "int", None,
           "free disk required beyond the model size (default from the profile, else 10%% + 1 GB)"),
    Option("SSH_CONFIG", None, "str", "~/.ssh/config", "ssh_config file for aliases, User, Port, IdentityFile"),
    Option("SSH_KNOWN_HOSTS", None, "str", "~/.ssh/known_hosts", "known_hosts file that host keys are checked against"),
    Option("EXO_API_URLS", "--exo-api", "str", None,
           "benchmark an EXO that is already serving: its API URLs, comma-separated (http://host:port; no port: "
           "EXO_API_PORT); one chat through each must answer for MODEL_ID. No bootstrap, no pass cache; "
           "`pytest benchmarks/` only"),
    Option("HF_EXCLUDE", None, "str", None,
           "hf download --exclude patterns, comma-separated: files the download skips and verify does not expect"),
    Option("HF_MAX_WORKERS", "--hf-max-workers", "int", None,
           "hf download --max-workers: how many files one node's hf fetches at once (hf's default: 8)"),
    Option("DOWNLOAD_ATTEMPTS", "--download-attempts", "int", 3,
           "how many times a node's hf download runs before its gate fails: a failed one, or one that left a "
           "partial-download marker, is run again after a wait (hf resumes what it has)"),
    Option("DOWNLOAD_BACKOFF_S", "--download-backoff", "duration", 30.0,
           "the wait before a download's second attempt; it doubles for each further attempt"),
    # The HF_* settings passed as is to every node's hf (the allow-list; any other HF_* key is refused):
    Option("HF_HOME", None, "path", None, "hf's home on each node (token, caches, Xet cache); absolute or ~/ "
           "(env file only: this shell's HF_HOME is not the nodes')", hf_env=True, environ=False),
    Option("HF_HUB_CACHE", None, "path", None, "hf's download cache on each node (default HF_HOME/hub); absolute "
           "or ~/ (env file only)", hf_env=True, environ=False),
    Option("HF_XET_CACHE", None, "path", None, "the Xet chunk cache on each node (default HF_HOME/xet); absolute "
           "or ~/ (env file only)", hf_env=True, environ=False),
    Option("HF_XET_HIGH_PERFORMANCE", None, "bool", None,
           "Xet downloads with more parallel connections and memory: faster on a fast link", hf_env=True),
    Option("HF_HUB_DISABLE_XET", None, "bool", None,
           "download over plain HTTP instead of the Xet protocol (e.g. behind a proxy that breaks Xet)", hf_env=True),
    Option("HF_HUB_DOWNLOAD_TIMEOUT", None, "int", None,
           "seconds hf waits for the hub while downloading a file before it gives up or retries (hf's default: 10)",
           hf_env=True),
    Option("HF_HUB_ETAG_TIMEOUT", None, "int", None,
           "seconds hf waits for a file's metadata (its ETag) from the hub (hf's default: 10)", hf_env=True),
    Option("HF_HUB_ENABLE_HF_TRANSFER", None, "bool", None,
           "the hf_transfer accelerator of older hf (before 1.0); newer hf ignores it and says to use "
           "HF_XET_HIGH_PERFORMANCE", hf_env=True),
    Option("MEMORY_HEADROOM_GB", "--memory-headroom-gb", "int", 8,
           "serving verdict: warn when a node keeps less than this many GB beyond its share of the model "
           "(KV cache, OS)"),
    Option("ALLOW_SERVING_NO_GO", "--allow-serving-no-go", "bool", False,
           "run past a serving no-go at preflight (unknown architecture, unloadable format, does not fit, no card); "
           "recorded in the ledger and run.json"),
)
OPTION_BY_KEY = {o.key: o for o in OPTIONS}
HF_ENV_KEYS = tuple(o.key for o in OPTIONS if o.hf_env)  # the HF_* settings every node's hf gets


@dataclass(frozen=True)
class NodeConfig:
    """One node: its index (1-based), name (`node1`), SSH target or `local`, and absolute paths on it.

    `exo_cmd` is "" when neither EXO_CMD_NODEk nor EXO_CMD is set: exo is then looked up on the node where it
    installs to (`modeldrop.exo.installs`)."""

    index: int
    name: str
    target: str
    model_dir: str
    hf_cmd: str
    exo_cmd: str
    exo_log_dir: str
    python_cmd: str | None = None

    @property
    def models_parent(self) -> str:
        """The directory exo must be pointed at: the parent of the model dir."""
        return self.model_dir.rsplit("/", 1)[0] or "/"


# RunConfig field of each option key whose field name is not simply the key in lower case.
FIELD_OF: dict[str, str] = {
    "MODEL_INSTANCE_ID": "instance_id", "NODES": "nodes", "RUN_REPORT_DIR": "report_dir",
    "EXO_SHARDING": "sharding", "EXO_INSTANCE_META": "instance_meta", "HF_INCLUDE": "include",
    "EXPECTED_SAFE_TENSOR_COUNT": "expected_safetensors", "EXPECTED_GGUF_COUNT": "expected_gguf",
    "EXO_API_PORT": "api_port", "EXO_NAMESPACE": "namespace", "EXO_LIBP2P_PORT": "libp2p_port",
    "HF_EXCLUDE": "exclude",
}


def field_of(key: str) -> str:
    """The RunConfig attribute that holds option `key` (e.g. EXO_API_PORT -> api_port, FAST -> fast)."""
    return FIELD_OF.get(key, key.lower())


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs to know, validated and typed: one attribute per option (see `field_of`).

    `values` keeps every resolved key for the ledger and `sources` where each came from ("file:line",
    "environment", a flag); code reads the typed attributes, never `values`.
    """

    model_id: str
    nodes: tuple[NodeConfig, ...]
    include: tuple[str, ...]
    expected_safetensors: int | None
    expected_gguf: int | None
    min_free_bytes: int | None
    api_port: int
    namespace: str
    report_dir: Path
    profile_path: Path
    profile: dict | None
    profile_seed: Path | None = None  # a checkout's tracked table (statedirs.ProfileFiles)
    instance_id: str = ""
    sharding: str = "Pipeline"
    instance_meta: str = "MlxRing"
    libp2p_port: int | None = None
    exo_extra_args: tuple[str, ...] = ()
    fast: bool = False
    online: bool = False
    allow_blocked_model: bool = False
    verify_hashes: bool = False
    accept_new_host_keys: bool = False
    teardown: bool = False
    stop_existing_exo: bool = False
    update_profile: bool = False
    resume_bootstrap: bool = False
    audit: bool = False
    pass_max_age: float = 24 * 3600.0
    cluster_window_s: float = 60.0
    settle_window_s: float = 10.0
    ready_timeout_s: float = 600.0
    stall_window_s: float = 180.0
    chat_timeout_s: float = 120.0
    chat_stall_s: float = 30.0
    chat_spread_max: float = 3.0
    chat_spread_stop: bool = False
    exo_synch_flag: str = "auto"
    hf_revision: str = "main"
    hf_endpoint: str | None = None
    hf_token: str | None = field(default=None, repr=False)
    allow_insecure_hub: bool = False
    parallel_downloads: bool = False
    keep_downloading: bool = False
    hf_cmd: str = "/opt/homebrew/bin/hf"
    exo_cmd: str | None = None
    exo_log_dir: str = "~/modeldrop-logs"
    disk_margin_gb: int | None = None
    ssh_config: str = "~/.ssh/config"
    ssh_known_hosts: str = "~/.ssh/known_hosts"
    exo_api_urls: tuple[str, ...] = ()
    memory_headroom_gb: int = 8
    allow_serving_no_go: bool = False
    sources: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict, repr=False)  # HF_TOKEN among them: never in a repr
    env_file: Path | None = None
    sandbox: bool = False
    exclude: tuple[str, ...] = ()
    hf_max_workers: int | None = None
    download_attempts: int = 3
    download_backoff_s: float = 30.0
    hf_home: str | None = None
    hf_hub_cache: str | None = None
    hf_xet_cache: str | None = None
    hf_xet_high_performance: bool | None = None
    hf_hub_disable_xet: bool | None = None
    hf_hub_download_timeout: int | None = None
    hf_hub_etag_timeout: int | None = None
    hf_hub_enable_hf_transfer: bool | None = None

    @property
    def model_folder(self) -> str:
        """`org--name`: the folder exo expects under its models dir."""
        return validate.model_folder(self.model_id)

    def node(self, k: int) -> NodeConfig:
        """Node `k` (1-based)."""
        return self.nodes[k - 1]

    def redacted(self) -> dict[str, Any]:
        """Resolved values for reports, with secrets replaced by `***`."""
        out = redact_mapping(self.values)
        out["nodes"] = [asdict(n) for n in self.nodes]
        return out


# RunConfig fields filled straight from an option's resolved value (the rest are derived in load_config).
_SIMPLE_FIELDS = frozenset(f.name for f in fields(RunConfig)) - {
    "model_id", "nodes", "instance_id", "include", "min_free_bytes", "exo_extra_args", "namespace", "report_dir",
    "profile_path", "profile", "profile_seed", "sources", "values", "env_file", "sandbox", "exo_api_urls", "exclude"}


def read_env_file(path: Path, environ: Mapping[str, str] | None = None,
                  pinned: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Read an env file as the shell would (quotes, comments, `export`, `${VAR}`) into {KEY: (value, "file:line")}.

    `${VAR}` of a key in `pinned` (set by a higher-precedence source) takes that value. Malformed lines,
    unknown keys (with the nearest known key suggested) and unset `${VAR}` raise InputError.
    """
    return envfile.read(path, is_known_key, known_keys(), os.environ if environ is None else environ, pinned,
                        unknown_hint=unknown_key_hint)


def unknown_key_hint(key: str) -> str | None:
    """What to say of an unknown HF_* key: it is not passed to the nodes' hf, and which ones are (None for
    other keys: the nearest known key is suggested)."""
    if not key.startswith("HF_"):
        return None
    own = [k for k in known_keys() if k.startswith("HF_") and k not in HF_ENV_KEYS and not k[-1].isdigit()]
    return (f"{key} is not an hf setting modeldrop passes to the nodes' hf; allowed: {', '.join(HF_ENV_KEYS)} "
            f"(and modeldrop's own {', '.join(own)}, HF_CMD_NODEk); config/model_drop.env.example says what each "
            "does")


def _pinned(cli: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Keys set above the env file (environment, command line), for `${VAR}` in the file; a MODEL_ID set there
    also fixes MODEL_INSTANCE_ID (its `org--name`) unless that is set there too."""
    out = {k: str(v) for k, v in environ.items() if _from_environ(k)}
    out.update({k: str(v) for k, v in cli.items() if v is not None})
    if out.get("MODEL_ID") and "MODEL_INSTANCE_ID" not in out:
        out["MODEL_INSTANCE_ID"] = validate.model_folder(out["MODEL_ID"].strip())
    return out


def known_keys() -> list[str]:
    """Every key an env file may set: the OPTIONS keys and the per-node keys for nodes 1..4."""
    return [o.key for o in OPTIONS] + [f"{p}{k}" for p in PER_NODE_KEYS for k in range(1, MAX_NODES + 1)]


def is_known_key(key: str) -> bool:
    """True for a key in OPTIONS or a per-node key NODEk / MODEL_DIR_NODEk / … with k in 1..4."""
    if key in OPTION_BY_KEY:
        return True
    m = re.fullmatch(r"([A-Z_]+?)([1-9])", key)
    return bool(m and m.group(1) in PER_NODE_KEYS and int(m.group(2)) <= MAX_NODES)


def _from_environ(key: str) -> bool:
    """A known key that this machine's environment may set (not the nodes' paths, see `Option.environ`)."""
    return is_known_key(key) and (key not in OPTION_BY_KEY or OPTION_BY_KEY[key].environ)


def _layered(cli: Mapping[str, Any], environ: Mapping[str, str],
             file_values: Mapping[str, tuple[str, str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge raw values by precedence: command line > environment > env file; remember each source."""
    raw: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, (value, where) in file_values.items():
        raw[key], source[key] = value, where
    for key, value in environ.items():
        if _from_environ(key):
            raw[key], source[key] = value, "environment"
    for key, value in cli.items():
        if value is not None:
            opt = OPTION_BY_KEY[key]
            raw[key], source[key] = value, opt.flag or key
    return raw, source


_CONVERT: dict[str, Callable[[Any, str], Any]] = {
    "str": lambda v, s: str(v),
    "bool": validate.boolean,
    "int": lambda v, s: validate.count(v, s),
    "port": validate.port,
    "duration": validate.duration_s,
    "path": validate.node_path,
    "ratio": validate.ratio,
}


def _convert(opt: Option, value: Any, where: str) -> Any:
    """Convert one raw option value to its kind, validating choices."""
    if opt.kind == "choice":
        if value not in opt.choices:
            raise InputError(f"{where}: invalid {opt.key} {value!r}; expected one of {', '.join(opt.choices)}")
        return value
    return _CONVERT[opt.kind](value, where)


def _settings(raw: Mapping[str, Any], source: Mapping[str, str]) -> dict[str, Any]:
    """Every OPTIONS key converted, defaults filled in."""
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.key in raw and raw[opt.key] not in (None, ""):
            values[opt.key] = _convert(opt, raw[opt.key], f"{source.get(opt.key, opt.key)} ({opt.key})")
        else:
            values[opt.key] = opt.default
    return values


def _targets(raw: Mapping[str, Any], source: Mapping[str, str], required: bool = True) -> list[str]:
    """Node targets from NODES (comma list) or NODE1..NODE4; at least one (unless not `required`), at most four."""
    if raw.get("NODES"):
        items = [t.strip() for t in str(raw["NODES"]).split(",")]
        where = source.get("NODES", "NODES")
    else:
        items = [str(raw[f"NODE{k}"]) for k in range(1, MAX_NODES + 1) if raw.get(f"NODE{k}")]
        where = "NODE1..NODE4"
    if not items and not required:
        return []
    if not items:
        raise InputError("--nodes: no nodes configured; set --nodes (e.g. local or studio1,studio2) or NODE1..NODE4")
    if len(items) > MAX_NODES:
        raise InputError(f"{where}: {len(items)} nodes given; modeldrop supports 1 to {MAX_NODES}")
    targets = [validate.node_spec(t, where) for t in items]
    for j, t in enumerate(targets):
        if t in targets[:j]:
            raise InputError(f"{where}: node{targets.index(t) + 1} and node{j + 1} are the same target {t}; "
                             "list each Mac once")
    return targets


def _node(k: int, target: str, raw: Mapping[str, Any], source: Mapping[str, str], values: Mapping[str, Any],
          folder: str) -> NodeConfig:
    """Resolve node k's paths: per-node key, else the global key, else the default."""
    def pick(per_node: str, default: str | None) -> str:
        key = f"{per_node}{k}"
        where = f"{source[key]} ({key})" if key in source else key
        value = raw.get(key) or default
        return validate.node_path(str(value), where) if value else ""

    python = raw.get(f"PYTHON_CMD_NODE{k}")
    return NodeConfig(
        index=k, name=f"node{k}", target=target,
        model_dir=pick("MODEL_DIR_NODE", f"~/.exo/models/{folder}"),
        hf_cmd=pick("HF_CMD_NODE", values["HF_CMD"]),
        exo_cmd=pick("EXO_CMD_NODE", values["EXO_CMD"]),
        exo_log_dir=pick("EXO_LOG_DIR_NODE", values["EXO_LOG_DIR"]),
        python_cmd=pick("PYTHON_CMD_NODE", "") if python else None,
    )


def _where(source: Mapping[str, str], key: str) -> str:
    """How an error names a key: "file:line (KEY)", "environment (KEY)", "--flag (KEY)" or "KEY"."""
    return f"{source[key]} ({key})" if key in source else key


def load_config(cli: Mapping[str, Any], *, environ: Mapping[str, str] | None = None,
                env_file: Path | None = None, sandbox: bool = False, checkout: Path | None = Path(".")) -> RunConfig:
    """Build and validate the RunConfig; raise InputError (one line, naming the input) on any bad input.

    `checkout` is the checkout whose suite runs (None: the suite installed from a wheel); it decides the default
    report dir and the seed profile table (modeldrop.statedirs)."""
    environ = os.environ if environ is None else environ
    pinned = _pinned(cli, environ)
    file_values = read_env_file(env_file, environ, pinned) if env_file else {}
    if "MODEL_INSTANCE_ID" in pinned and "MODEL_INSTANCE_ID" in file_values and "MODEL_ID" in file_values \
            and file_values["MODEL_INSTANCE_ID"][0] == validate.model_folder(file_values["MODEL_ID"][0]):
        del file_values["MODEL_INSTANCE_ID"]  # the file's instance id was its own model's: it follows MODEL_ID
    raw, source = _layered(cli, environ, file_values)
    values = _settings(raw, source)
    if not values["MODEL_ID"]:
        raise InputError("--model: no model given; pass --model org/name or set MODEL_ID")
    model = validate.model_id(values["MODEL_ID"], source.get("MODEL_ID", "--model"))
    values["MODEL_ID"] = model
    folder = validate.model_folder(model)
    values["MODEL_INSTANCE_ID"] = _instance_id(values["MODEL_INSTANCE_ID"], folder, model, source)
    extra = _extra_args(values["EXO_EXTRA_ARGS"], source)
    values["EXO_SYNCH_FLAG"], extra = _synch_flag(values["EXO_SYNCH_FLAG"], extra, source)
    files = _profile_files(values, source, checkout)
    profile = profiles.lookup(profiles.load(profiles.row_file(files.path, files.seed, model)), model)
    api_urls = validate.api_urls(values["EXO_API_URLS"], _where(source, "EXO_API_URLS"), values["EXO_API_PORT"]) \
        if values["EXO_API_URLS"] else ()
    values["EXO_API_URLS"] = ",".join(api_urls) or None
    targets = _targets(raw, source, required=not api_urls)  # an EXO already serving needs no nodes
    nodes = tuple(_node(k, t, raw, source, values, folder) for k, t in enumerate(targets, 1))
    values["NODES"] = ",".join(n.target for n in nodes)
    _apply_profile(values, raw, profile)
    values["EXO_SHARDING"] = values["EXO_SHARDING"] or "Pipeline"
    values["EXO_INSTANCE_META"] = values["EXO_INSTANCE_META"] or "MlxRing"
    if values["DOWNLOAD_ATTEMPTS"] < 1:
        raise InputError(f"{_where(source, 'DOWNLOAD_ATTEMPTS')}: invalid count {values['DOWNLOAD_ATTEMPTS']}; "
                         "expected 1 or more (1: no retry)")
    typed = {field_of(k): v for k, v in values.items() if field_of(k) in _SIMPLE_FIELDS}
    return RunConfig(
        **typed, model_id=model, nodes=nodes, instance_id=values["MODEL_INSTANCE_ID"],
        include=validate.include_patterns(values["HF_INCLUDE"] or "", _where(source, "HF_INCLUDE")),
        exclude=validate.include_patterns(values["HF_EXCLUDE"] or "", _where(source, "HF_EXCLUDE")),
        min_free_bytes=_min_free_bytes(values, profile), exo_extra_args=extra,
        namespace=validate.namespace(values["EXO_NAMESPACE"] or f"modeldrop-{folder}"[:64],
                                     _where(source, "EXO_NAMESPACE")),
        report_dir=_report_dir(values, checkout), profile_path=files.path, profile=profile, profile_seed=files.seed,
        exo_api_urls=api_urls, sources=dict(source), values=values, env_file=env_file, sandbox=sandbox,
    )


def _report_dir(values: dict[str, Any], checkout: Path | None) -> Path:
    """RUN_REPORT_DIR, else the default for where the suite comes from (set back into `values` for the ledger);
    the per-user data dir is made here, so one that cannot be is an InputError naming it and the way out."""
    if values["RUN_REPORT_DIR"]:
        path = Path(values["RUN_REPORT_DIR"]).expanduser()
    else:
        path = statedirs.default_report_dir(checkout)
        if path.is_absolute():
            statedirs.writable_dir(path, "the per-user data dir for run folders",
                                   "set RUN_REPORT_DIR (or --report-dir) to a folder you can write")
    values["RUN_REPORT_DIR"] = str(path)
    return path


def _profile_files(values: dict[str, Any], source: Mapping[str, str], checkout: Path | None) -> statedirs.ProfileFiles:
    """The profile files of the run, their folder checked and each file validated (InputError naming it)."""
    files = statedirs.profile_files(values["PROFILE_PATH"], checkout)
    statedirs.check_profile_folder(files, _where(source, "PROFILE_PATH"))
    for path in (files.path, files.seed):
        if path is not None:
            profiles.load(path)
    values["PROFILE_PATH"] = str(files.path)
    return files


def _instance_id(given: str | None, folder: str, model: str, source: Mapping[str, str]) -> str:
    """MODEL_INSTANCE_ID: `org--name` of MODEL_ID; a different value is an InputError naming its line."""
    if given not in (None, "") and given != folder:
        raise InputError(f"{_where(source, 'MODEL_INSTANCE_ID')}: {given!r} does not match MODEL_ID {model!r}; "
                         f"expected {folder!r} (org--name), or leave MODEL_INSTANCE_ID unset")
    return folder


def _extra_args(value: str | None, source: Mapping[str, str]) -> tuple[str, ...]:
    """EXO_EXTRA_ARGS split and checked against exo's known flags (InputError naming the line)."""
    try:
        return exo_flags.parse_extra_args(value or "", _where(source, "EXO_EXTRA_ARGS"))
    except ValueError as e:
        raise InputError(str(e)) from None


def _synch_flag(value: str, extra: tuple[str, ...], source: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """(EXO_SYNCH_FLAG, EXO_EXTRA_ARGS without it): a fast-synch flag in EXO_EXTRA_ARGS is the synch flag (required,
    as if EXO_SYNCH_FLAG named it); one that contradicts an EXO_SYNCH_FLAG that was set is an InputError."""
    given = [t for t in extra if t in exo_flags.SYNCH_FLAGS]
    if not given:
        return value, extra
    wanted = given[-1].lstrip("-")
    if len(set(given)) > 1 or ("EXO_SYNCH_FLAG" in source and value != wanted):
        raise InputError(f"{_where(source, 'EXO_EXTRA_ARGS')}: {' and '.join(dict.fromkeys(given))} contradicts "
                         f"EXO_SYNCH_FLAG={value} ({source.get('EXO_SYNCH_FLAG', 'default')}); set only "
                         f"EXO_SYNCH_FLAG (auto, no-fast-synch, fast-synch or exo-default)")
    return wanted, tuple(t for t in extra if t not in exo_flags.SYNCH_FLAGS)


def _apply_profile(values: dict[str, Any], raw: Mapping[str, Any], profile: dict | None) -> None:
    """Fill keys the operator did not set from the model's profile (lowest precedence)."""
    if not profile:
        return
    mapping = {"HF_INCLUDE": ("include", lambda v: ",".join(v)), "HF_EXCLUDE": ("exclude", lambda v: ",".join(v)),
               "EXPECTED_SAFE_TENSOR_COUNT": ("expected_safetensors", int),
               "EXPECTED_GGUF_COUNT": ("expected_gguf", int),
               "EXO_SHARDING": ("sharding", str), "EXO_INSTANCE_META": ("instance_meta", str)}
    for key, (field_name, conv) in mapping.items():
        if raw.get(key) in (None, "") and profile.get(field_name) is not None:
            values[key] = conv(profile[field_name])


def _min_free_bytes(values: Mapping[str, Any], profile: dict | None) -> int | None:
    """Disk threshold: model size + margin, from DISK_MARGIN_GB / the profile; None when size is unknown."""
    profile = profile or {}
    if profile.get("disk_threshold_gb") is not None and values["DISK_MARGIN_GB"] is None:
        return int(float(profile["disk_threshold_gb"]) * 1e9)
    size = profile.get("total_size_bytes")
    if size is None:
        return None
    margin = values["DISK_MARGIN_GB"]
    return int(size + (margin * 1e9 if margin is not None else size * 0.10 + 1e9))


def effective(cfg: RunConfig, key: str, fallback: Any) -> Any:
    """Option `key`'s typed value on cfg, or `fallback` when it is unset (None or empty)."""
    v = getattr(cfg, field_of(key), None)
    return fallback if v in (None, "") else v


def example_env_file() -> str:
    """The text of config/model_drop.env.example: every key, commented."""
    lines = ["# modeldrop configuration. Precedence: command line > environment > this file > model profile.",
             "# Copy to config/model_drop.env (the default --env-file) and edit. Read as a shell reads it:",
             '# KEY="value" # comment, export KEY=value, and ${KEY} of a key set above (or in the environment).', ""]
    for opt in OPTIONS:
        flag = f" (also {opt.flag})" if opt.flag else ""
        flag += " [passed as is to every node's hf]" if opt.hf_env else ""
        default = "" if opt.default in (None, False) else opt.default
        lines += [f"# {opt.help.replace('%%', '%')}{flag}", f"# {opt.key}={default}", ""]
    lines += ["# Per node k = 1..4 (node 1 is where the canary runs):",
              "# NODE1=studio1              # ssh_config alias, user@host[:port], or local",
              '# MODEL_DIR_NODE1="~/Models/${MODEL_INSTANCE_ID}"   # must end in org--name',
              "# HF_CMD_NODE1=/opt/homebrew/bin/hf",
              "# EXO_CMD_NODE1=/opt/homebrew/bin/exo   # default: looked up where exo installs to",
              "# EXO_LOG_DIR_NODE1=~/modeldrop-logs",
              "# PYTHON_CMD_NODE1=/opt/homebrew/bin/python3   # python3 for probes (default: picked per node)", ""]
    return "\n".join(lines)

"""The failure-signature table: what a failing gate saw -> likely cause -> next command.

Each `Signature` has an id (the catalog's in shared/reference/exo-failure-signatures.md, or
`SEED-*`/`X-*` for the seed guide's failures and the suite's own), the gates that can see it, what it
matches (a log regex from `modeldrop.exo.logs.RX`, a `/state` condition, HTTP evidence, or a verdict
fact), the likely cause and the next command. `match(gate, logs, state, http, facts)` returns the
signatures that match, each with `matched` = the evidence line that triggered it. A failing gate
attaches them with `evidence.signatures([s.as_dict() for s in ...])`.

Inputs: `logs` {node name: log text}; `state` one `/state` dict (the API the gate used) or None;
`http` {status, body, error_kind, error} of the failing request or None; `facts` the verdict's facts
(`modeldrop.verdict.Verdict.facts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modeldrop import gatetable
from modeldrop.exo import logs as L
from modeldrop.exo import state as st
from modeldrop.verdict import Fact, checked_facts

ALL_EXO_GATES = gatetable.exo_gates()


@dataclass(frozen=True)
class Ctx:
    gate: str
    logs: dict[str, str]
    state: dict | None
    http: dict | None
    facts: dict[Fact, Any]


@dataclass(frozen=True)
class Signature:
    id: str
    gates: tuple[str, ...]
    title: str
    cause: str
    next_command: str
    matches: str  # what it matches, for the table and the report
    test: Callable[[Ctx], str | None]

    def row(self) -> dict:
        return {"id": self.id, "gates": list(self.gates), "title": self.title, "matches": self.matches,
                "cause": self.cause, "next_command": self.next_command}


@dataclass(frozen=True)
class Matched:
    sig: Signature
    matched: str
    next_command: str = ""  # the signature's next command with what this failure knows filled in

    @property
    def id(self) -> str:
        return self.sig.id

    def as_dict(self) -> dict:
        return {"id": self.sig.id, "title": self.sig.title, "cause": self.sig.cause,
                "next_command": self.next_command or self.sig.next_command, "matched": self.matched}


# placeholders of a next command -> the verdict fact that fills them when the failure knows it
FILLED = {"<command_id>": Fact.command_id, "<api>": Fact.api_url}


def filled(command: str, facts: dict[Fact, Any]) -> str:
    """`command` with each placeholder the facts know replaced (e.g. H3's `POST <api>/v1/cancel/<command_id>`)."""
    for placeholder, key in FILLED.items():
        if facts.get(key):
            command = command.replace(placeholder, str(facts[key]).rstrip("/"))
    return command


# -- matchers -------------------------------------------------------------------------------------
def log(name: str, pred: Callable[[Any], bool] | None = None) -> Callable[[Ctx], str | None]:
    """First log line (any node) matching catalog regex `name` (and pred(match) if given)."""
    def test(c: Ctx) -> str | None:
        for node, text in c.logs.items():
            for m in L.RX[name].finditer(text or ""):
                if pred is None or pred(m):
                    return f"{node}: {L.line_of(text, m, 300)}"
        return None
    return test


def fact(key: Fact, pred: Callable[[Any], bool] = bool) -> Callable[[Ctx], str | None]:
    """The verdict fact `key` when it holds (pred(value)), as `key=value`."""
    Fact(key)  # a name outside the Fact enum fails when the table is built

    def test(c: Ctx) -> str | None:
        v = c.facts.get(key)
        return f"{key}={v}" if v is not None and pred(v) else None
    return test


def http_body(rx_name: str) -> Callable[[Ctx], str | None]:
    def test(c: Ctx) -> str | None:
        h = c.http or {}
        text = f"{h.get('body') or ''} {h.get('error') or ''} {c.facts.get(Fact.http_body) or ''}"
        m = L.RX[rx_name].search(text)
        return f"HTTP {h.get('status') or c.facts.get(Fact.http_status)}: {m.group(0)}" if m else None
    return test


def any_of(*tests: Callable[[Ctx], str | None]) -> Callable[[Ctx], str | None]:
    def test(c: Ctx) -> str | None:
        for t in tests:
            r = t(c)
            if r:
                return r
        return None
    return test


def _namespaces_differ(c: Ctx) -> str | None:
    seen = {node: sorted({m.group("ns") for m in L.RX["NS_LINE"].finditer(t or "")}) for node, t in c.logs.items()}
    values = {tuple(v) for v in seen.values() if v}
    if len(values) > 1:
        return "namespace lines differ: " + ", ".join(f"{n}={v}" for n, v in seen.items())
    return None


def _isolated(c: Ctx) -> str | None:
    iso = c.facts.get(Fact.isolated)
    if not iso:
        return None
    ns = _namespaces_differ(c)
    return f"nodes seeing fewer than {c.facts.get(Fact.n)}: {[f'node{k}' for k in iso]}" + (f"; {ns}" if ns else "")


def _no_ring(c: Ctx) -> str | None:
    """The links (by node name) whose absence leaves EXO no ring through every node."""
    links = c.facts.get(Fact.no_ring)
    if not links:
        return None
    return f"no ring through all {c.facts.get(Fact.n)} nodes: missing link {', '.join(links)}"


def _runners_stuck(kinds: set[str]) -> Callable[[Ctx], str | None]:
    def test(c: Ctx) -> str | None:
        if not c.facts.get(Fact.stalled):
            return None
        labels = c.facts.get(Fact.runners) or {}
        hit = {r: s for r, s in labels.items() if s.split("(")[0] in kinds}
        return f"runners stuck: {hit}" if hit else None
    return test


def _downloads_incomplete(c: Ctx) -> str | None:
    model = c.facts.get(Fact.model_id)
    if not c.state or not model:
        return None
    recorded = st.downloads_for_model(c.state, model)
    bad = [f"{d.node_id[:12]}:{d.kind}" for d in recorded if d.kind != "DownloadCompleted"]
    placed = {nid for inst in st.instances_for_model(c.state, model) for nid in inst.node_ids}
    # real EXO offline with a shard gone: the node's worker keeps planning DownloadModel, records nothing
    friendly = st.cluster_view(c.state).friendly
    bad += [f"{st.node_label(friendly, nid)}: no download record"
            for nid in sorted(placed - {d.node_id for d in recorded})]
    return f"downloads not complete: {bad}" if bad else None


def _download_failed_offline(c: Ctx) -> str | None:
    if not c.state:
        return None
    for d in st.downloads(c.state):
        if d.kind == "DownloadFailed" and "offline" in str(d.error_message).lower():
            return f"DownloadFailed on {d.node_id[:12]}: {d.error_message}"
    return None


def _duplicate_friendly(c: Ctx) -> str | None:
    if not c.state:
        return None
    names = [v for v in st.cluster_view(c.state).friendly.values() if v]
    dup = sorted({n for n in names if names.count(n) > 1})
    return f"two node ids with friendlyName {dup}" if dup else None


def _not_listed_with_card(c: Ctx) -> str | None:
    """D6 holds only when EXO has a card for the model and still does not list it as downloaded."""
    if c.facts.get(Fact.not_listed) and c.facts.get(Fact.has_card) and not c.facts.get(Fact.download_failed):
        return "EXO has a card for the model but never listed it under ?status=downloaded"
    return None


def _no_card(c: Ctx) -> str | None:
    if not c.facts.get(Fact.no_card):
        return None
    return f"EXO has no model card; add it with: {c.facts.get(Fact.add_command) or 'POST <api>/models/add'}"


def _runner_signal(c: Ctx) -> str | None:
    """A runner killed by a signal: verdict fact `runner_signal` or the supervisor's log line."""
    sigs = c.facts.get(Fact.runner_signal)
    if sigs:
        where = ", ".join(c.facts.get(Fact.runner_nodes) or [])
        return f"runner killed by signal {', '.join(map(str, sigs))}" + (f" on {where}" if where else "")
    return log("RUNNER_TERM", lambda m: m.group("sig") is not None)(c)


def _exited_before_up(c: Ctx) -> str | None:
    early = [k for k in c.facts.get(Fact.exited) or [] if k not in (c.facts.get(Fact.restarted) or [])]
    return f"exited before the API answered: {[f'node{k}' for k in early]}" if early else None


def _exo_gone(c: Ctx) -> str | None:
    """The cluster's exo processes that died after startup (verdict fact `exo_gone`, {k: "pid N"})."""
    gone = c.facts.get(Fact.exo_gone) or {}
    return "; ".join(f"exo of node{k} ({pid}) is no longer running" for k, pid in sorted(gone.items())) or None


def _http_status(code: int) -> Callable[[Ctx], str | None]:
    def test(c: Ctx) -> str | None:
        h = c.http or {}
        return f"HTTP {code}: {str(h.get('error') or h.get('body'))[:200]}" if h.get("status") == code else None
    return test


def _chat_kind(*kinds: str) -> Callable[[Ctx], str | None]:
    def test(c: Ctx) -> str | None:
        hit = sorted(set(c.facts.get(Fact.kinds) or []) & set(kinds))
        return f"chat error kinds {hit}" if hit else None
    return test


def _errno(*nums: int) -> Callable[[Ctx], str | None]:
    return log("RING_CONNECT", lambda m: int(m.group("errno")) in nums)


# -- the table ------------------------------------------------------------------------------------
CANARY_START = gatetable.exo_gates(after_start=False)  # the gates that start exo
AFTER_START = gatetable.exo_gates(after_start=True)
S = Signature
TABLE: tuple[Signature, ...] = (
    S("X-EXO-GONE", AFTER_START, "A node's exo process died after startup",
      "exo itself, not only a runner, ended mid-run: killed from outside (the OOM killer or jetsam, a person, "
      "another tool's cleanup), a crash (its traceback ends the captured log), or the Mac slept or rebooted; "
      "every later request through that node fails",
      "on the named node: tail -n 50 <EXO_LOG_DIR_NODEk>/<run>-node<k>-cluster.log; dmesg | grep -i 'killed "
      "process' (Linux) or log show --last 1h --predicate 'eventMessage contains \"memorystatus\"' (macOS); "
      "then start the cluster again: pytest gates/ -k 'startup or cluster or placement or transport or chat'",
      "verdict fact `exo_gone` (a launch record's pid no longer runs, start time checked)", _exo_gone),
    S("A1", ("cluster",), "Cluster isolated: nodes do not see each other",
      "Namespace mismatch (different --namespace / EXO_LIBP2P_NAMESPACE, different exo versions whose default "
      "namespace is the version, app vs CLI), or a flag that keeps a node out (--no-worker, --no-api)",
      "grep -h 'NAMESPACE' <exo log> on every node and compare; on NEW pass the same --namespace, on OLD the same "
      "EXO_LIBP2P_NAMESPACE; check `ps -o command= -p <pid>` for --no-worker/--no-api",
      "verdict fact `isolated` (fewer than N nodes in a node's nodeIdentities/topology for the whole cluster "
      "window) plus differing `EXO_*_NAMESPACE:` log lines", _isolated),
    S("X-NO-RING", ("cluster",), "No ring through every node: a link is missing",
      "EXO places an MlxRing instance over all N nodes only along a cycle whose neighbours reach each other's API "
      "(four Macs on Thunderbolt with no shared LAN: a ring, every cable needed); the named link is unplugged, down "
      "or on another subnet, so EXO's /node_id probe between those two nodes fails",
      "check the cable between the named nodes; on each: ifconfig | grep -B2 -A4 bridge; from each of the two: "
      "curl http://<other node's address>:<api-port>/node_id; then pytest gates/ -k 'startup or cluster'",
      "verdict fact `no_ring` (the links, by node name, that would close a ring)", _no_ring),
    S("A5", ("cluster", "chat"), "Event-log resync loop (Nack attempts)",
      "Follower stuck re-requesting the event log after a re-election",
      "coordinated stop of all nodes, restart together",
      "log NACK_LOOP", log("NACK_LOOP")),
    S("A6", ("cluster", "placement"), "Ghost node ids in the cluster",
      "Node ids are random per start; departed ids linger, or another exo runs in the namespace",
      "stop all exo on every node (--stop-existing-exo), start together",
      "verdict fact `ghosts` (ids in /state that no node answers as /node_id)", fact(Fact.ghosts)),
    S("A7", ("cluster", "placement", "transport", "chat"), "A node timed out of the cluster",
      ">30 s without events from a node (sleep, Wi-Fi power save, overload)",
      "sudo pmset -a sleep 0 disksleep 0; check lastSeen in /state; use wired links", "log NODE_TIMEOUT",
      log("NODE_TIMEOUT")),
    S("A9", CANARY_START, "exo refused to start: removed namespace variable or bootstrap peers",
      "EXO_LIBP2P_NAMESPACE or EXO_BOOTSTRAP_PEERS set for a NEW (zenoh) exo",
      "unset EXO_LIBP2P_NAMESPACE EXO_BOOTSTRAP_PEERS in the node's shell profile; use --namespace",
      "log NS_REMOVED | BOOTSTRAP_GONE", any_of(log("NS_REMOVED"), log("BOOTSTRAP_GONE"))),
    S("A10", ("cluster", "transport"), "Inbound connections blocked (firewall / Local Network privacy)",
      "macOS application firewall or Local Network permission blocks the API port (topology edges) or the random "
      "ring port", "/usr/libexec/ApplicationFirewall/socketfilterfw --getglobalstate; from each node "
      "curl http://<peer-ip>:<api-port>/node_id",
      "verdict fact `missing_edges` (an edge placement needs absent, e.g. one-way) or ring errno 60 (ETIMEDOUT)",
      any_of(fact(Fact.missing_edges), _errno(60, 110))),
    S("C1x", ("placement",), "No cycle with sufficient memory",
      "Sum of ramAvailable below the model's storage size, a node missing from nodeMemory, or min_nodes above the "
      "node count", "curl -s <api>/state | jq '.nodeMemory'; close apps or add nodes",
      "HTTP body PL_NO_MEM", http_body("PL_NO_MEM")),
    S("C2x", ("placement",), "One node has too little memory for its layers",
      "Uneven nodes; proportional split overflows the small node", "use Tensor on equal nodes or drop the small node",
      "HTTP body PL_NODE_MEM", http_body("PL_NODE_MEM")),
    S("C3x", ("placement",), "Model does not support tensor parallelism",
      "Card supports_tensor=false", "rerun with --sharding Pipeline", "HTTP body PL_NO_TP_MODEL",
      http_body("PL_NO_TP_MODEL")),
    S("C4x", ("placement",), "No tensor sharding for this node count",
      "hidden_size or kv_heads not divisible by N", "Pipeline for this N, or Tensor on a divisor node count",
      "HTTP body PL_TP_DIVIS", http_body("PL_TP_DIVIS")),
    S("C5x", ("placement",), "MlxJaccl requested but no RDMA cycle",
      "RDMA not all-to-all, rdma_ctl disabled, ghost node, TB4",
      "rdma_ctl status on every node; or --instance-meta MlxRing",
      "HTTP body PL_NO_RDMA", http_body("PL_NO_RDMA")),
    S("C6x", ("placement",), "No connectivity between neighbouring nodes",
      "No socket edge between a pair in topology", "curl http://<peer-ip>:<api-port>/node_id from each node",
      "HTTP body PL_RING_CONN | PL_JACCL_COMM | PL_JACCL_A2A",
      any_of(http_body("PL_RING_CONN"), http_body("PL_JACCL_COMM"), http_body("PL_JACCL_A2A"))),
    S("C7x", ("placement",), "Pipeline not supported for this model", "Model-specific restriction",
      "rerun with --sharding Tensor", "HTTP body PL_PIPE_UNSUP", http_body("PL_PIPE_UNSUP")),
    S("C8x", ("placement",), "More nodes than layers", "Tiny model", "fewer nodes", "HTTP body PL_LAYERS",
      http_body("PL_LAYERS")),
    S("C9x", ("placement",), "POST /instance: insufficient memory",
      "Cluster-wide ramAvailable too low (another instance still loaded?)",
      "curl -s <api>/state | jq '.instances|keys'; delete old instances", "HTTP body PL_INSUFF_API",
      http_body("PL_INSUFF_API")),
    S("C10x", ("placement",), "Instance never appeared after POST /instance",
      "Placement failed asynchronously or the API was paused during an election",
      "grep 'Error in command processor' <exo log> on the master", "verdict fact `never_created` or log PL_CMD_ERR",
      any_of(fact(Fact.never_created), log("PL_CMD_ERR"))),
    S("C11x", ("placement",), "Model card could not be loaded",
      "Model id not in exo's catalog and the HF card fetch failed (offline, gated)",
      "curl -s <api>/v1/models | jq '.data[].id'; curl -s -X POST <api>/models/add -H 'Content-Type: "
      "application/json' -d '{\"model_id\": \"<MODEL_ID>\"}' (works offline when the model dir is local; a card "
      "file dropped into custom_model_cards/ is deleted by EXO at start)",
      "HTTP body PL_CARD (or a 500 from /instance/placement offline)", any_of(http_body("PL_CARD"), _http_status(500))),
    S("C12x", ("placement",), "Internal placement inconsistency", "exo bug", "retry; file an exo issue with the log",
      "HTTP body PL_ONE_NEW", http_body("PL_ONE_NEW")),
    S("D1", ("placement",), "Runners wait for a download that is not complete on every node",
      "One node half-downloaded or never started (loading waits for DownloadCompleted on every node; with "
      "--no-downloads a missing model leaves runners RunnerIdle forever)",
      "rerun the parity gate: pytest gates/ -k parity; check /state downloads per node",
      "/state downloads for the model not Completed on a node, or runners stuck RunnerIdle",
      any_of(_downloads_incomplete, _runners_stuck({"RunnerIdle"}))),
    S("D6", ("node1_canary",), "exo does not see the audited model dir",
      "Model dir drift: files under another models dir (~/Models vs ~/.exo/models), HF-cache layout, or the folder "
      "is not org--name", "ls <parent of MODEL_DIR_NODE1>; the folder must be org--name with "
      "model.safetensors.index.json and every shard",
      "verdict fact `dir_drift`, or `not_listed` while EXO has a card for the model and no DownloadFailed",
      any_of(fact(Fact.dir_drift), _not_listed_with_card)),
    S("X-NO-CARD", ("node1_canary", "cluster", "placement"), "EXO has no model card for the model",
      "EXO lists and scans only models it has a card for; a model that just dropped has none, and POST /models/add "
      "failed (model dir not local on that node, config.json or the safetensors index missing or unreadable, or "
      "the hub unreachable for files that are not local)",
      "curl -s -X POST http://<node>:<api-port>/models/add -H 'Content-Type: application/json' "
      "-d '{\"model_id\": \"<MODEL_ID>\"}'; then pytest gates/ -k canary",
      "verdict fact `no_card` (the unfiltered GET /v1/models lacks the model and POST /models/add failed)", _no_card),
    S("X-UNKNOWN-ARCH", ("preflight",), "The nodes' mlx-lm has no module for the model's architecture",
      "config.json's model_type (after mlx-lm's MODEL_REMAPPING) is not among mlx_lm.models of the exo a node runs: "
      "its runners would fail to load the model after the whole download (\"Model type X not supported\")",
      "update exo on the named node(s) (brew upgrade --cask exo, or git pull && uv sync in the exo checkout) to one "
      "whose mlx-lm has mlx_lm/models/<type>.py; then pytest gates/ -k preflight",
      "verdict fact `unknown_architecture` (serving verdict)", fact(Fact.unknown_architecture)),
    S("X-UNLOADABLE-FORMAT", ("preflight",), "The repo's weights are not a format EXO loads",
      "EXO loads weights with mlx-lm, which reads model*.safetensors: a GGUF-only or PyTorch-only repo cannot serve, "
      "and a repo mixing formats fails verify after the download",
      "pick the MLX variant (mlx-community/<name>-4bit), convert with mlx_lm.convert, or set HF_INCLUDE to the "
      "safetensors and the repo's other files (the verdict names the value)",
      "verdict fact `unloadable_format` (serving verdict)", fact(Fact.unloadable_format)),
    S("X-DOES-NOT-FIT", ("preflight",), "The model does not fit the nodes' available memory (EXO's placement rule)",
      "EXO places only on a cycle whose summed ram_available covers the card's storage size, and a Pipeline node "
      "only its layers' share: placement would answer \"No cycles found with sufficient memory\" after the download",
      "add a node, free memory on the nodes (EXO counts available, not installed), or pick a smaller quantization "
      "(the 4-bit variant); --allow-serving-no-go runs anyway",
      "verdict fact `does_not_fit` (serving verdict)", fact(Fact.does_not_fit)),
    S("X-CARD-IMPOSSIBLE", ("preflight",), "EXO has no card for the model and cannot be taught one",
      "no built-in card, and POST /models/add would fail: config.json lacks a layer count or hidden_size, or the repo "
      "has no model.safetensors.index.json",
      "add a card for the model to exo's resources/inference_model_cards/ on every node, or pick a repo with an index",
      "verdict fact `card_impossible` (serving verdict)", fact(Fact.card_impossible)),
    S("E1", ("node1_canary", "placement"), "Offline and the model is not complete locally",
      "Model not pre-staged (or incomplete / wrong layout) on that node", "pytest gates/ -k verify on that node",
      "log OFFLINE_MISSING or DownloadFailed(offline) in /state",
      any_of(log("OFFLINE_MISSING"), _download_failed_offline)),
    S("E2", ("node1_canary", "placement"), "Offline: a file or the file list is missing",
      "Missing shard or index with no cached file list", "pytest gates/ -k verify", "log OFFLINE_FILE",
      log("OFFLINE_FILE")),
    S("F1", ("placement",), "Runners stuck connecting (distributed init blocked)",
      "A peer cannot reach the ring/JACCL port: firewall, wrong IP (errno 60 ETIMEDOUT: each of MLX's 5 connect "
      "attempts waits for the kernel timeout, so the `[ring] Couldn't connect` line comes minutes later), one "
      "node still downloading",
      "grep 'hostfile' <exo log> on every node; route -n get <ip>",
      "stall with runners RunnerConnecting/RunnerConnected", _runners_stuck({"RunnerConnecting", "RunnerConnected"})),
    S("F2", ("placement",), "Runners stuck loading or warming up",
      "Load/warmup wedged (JACCL ordering, GPU lock, slow disk)", "delete the instance, try MlxRing; check GPU use",
      "stall with runners RunnerLoading/RunnerLoaded/RunnerWarmingUp",
      _runners_stuck({"RunnerLoading", "RunnerLoaded", "RunnerWarmingUp"})),
    S("F4", ("placement", "chat"), "Instance deleted after 5 runner retries",
      "A runner keeps failing", "read the first RunnerFailed.errorMessage in the exo log", "log INST_RETRIES",
      log("INST_RETRIES")),
    S("X-RUNNER-SIGNAL", ("placement", "chat", "bench"), "Runner killed by a signal",
      "The runner process was killed from outside, not by a Python error: the OOM killer / jetsam (signal 9) "
      "or another process or a person (kill, signal 15 or 9)",
      "on the named node: log show --last 1h --predicate 'eventMessage contains \"memorystatus\"' (macOS) or "
      "dmesg | grep -i 'killed process' (Linux); check who else stops processes there; smaller quant or context",
      "verdict fact `runner_signal` (RunnerFailed `signal=N`) or log RUNNER_TERM with a signal", _runner_signal),
    S("F5", ("placement", "chat", "bench"), "Runner killed (signal 9): out of memory",
      "OOM / jetsam kill while loading or at long context",
      "log show --last 1h --predicate 'eventMessage contains \"memorystatus\"'; smaller quant or shorter context",
      "log RUNNER_KILLED", log("RUNNER_KILLED")),
    S("F8", ("placement", "chat"), "Runner crashed with an exception",
      "Python exception in the runner (load, jaccl, tokenizer)", "read the exception in the exo log",
      "log RUNNER_CRASH or verdict fact runner_failed", any_of(log("RUNNER_CRASH"), fact(Fact.runner_failed))),
    S("F11", ("placement",), "Instance vanished", "A runner failed somewhere, or a node left the topology",
      "read every node's exo log, not only the API node's", "verdict fact `vanished`", fact(Fact.vanished)),
    S("G1", ("placement", "chat", "bench"), "Metal GPU timeout", "A command buffer exceeded Metal's watchdog",
      "upgrade exo; smaller prefill step", "log METAL_TIMEOUT", log("METAL_TIMEOUT")),
    S("G2", ("placement", "transport"), "Ring peer unreachable at ConnectToGroup",
      "ETIMEDOUT(60)/ECONNREFUSED(61)/EHOSTUNREACH(65): master and worker chose different IPs, firewall, wrong "
      "interface", "route -n get <ip>; compare `rank N hostfile` lines with ifconfig on each node",
      "log RING_CONNECT (error 60|61|65; Linux 110|111|113)", log("RING_CONNECT")),
    S("G5", ("placement", "transport"), "JACCL coordinator unreachable",
      "`[jaccl] Couldn't connect (error: 60|61|65)`: the MLX_JACCL_COORDINATOR address is wrong or blocked "
      "(firewall, another interface, Local Network privacy)",
      "grep 'MLX_JACCL_COORDINATOR' <exo log> on every node; from each node nc -zv <coordinator ip> <port>; or "
      "--instance-meta MlxRing", "log JACCL_CONNECT or verdict fact `jaccl_errno`",
      any_of(log("JACCL_CONNECT"), fact(Fact.jaccl_errno))),
    S("G3", ("transport", "chat", "bench"), "Ring socket errors during inference",
      "Link drop or the peer runner died (errno 54 ECONNRESET)", "check the peer runner's status first; cable/link",
      "log RING_RECV | RING_ABORT", any_of(log("RING_RECV"), log("RING_ABORT"))),
    S("B10", ("transport",), "Logged ring hosts differ from /state hostsByNode",
      "Host IP selection differs between master and worker, or several NICs/VPN",
      "ifconfig; route -n get <ip> on each node",
      "verdict fact `mismatch`", fact(Fact.mismatch)),
    S("X-RING-SOCKET", ("transport",), "No ESTABLISHED socket to a ring neighbour",
      "Ring connection dropped after init or went over another interface",
      "netstat -an | grep .<ring port> on each node",
      "verdict fact `no_socket`", fact(Fact.no_socket)),
    S("X-NO-RUNNER-MAP", ("transport",), "Multi-shard instance with an empty nodeToRunner",
      "/state has not caught up (a node reset after a re-election) or the instance was posted by hand with "
      "nodeToRunner {}: no evidence of which node runs which rank",
      "curl -s <api>/state | jq '.instances[][].shardAssignments'; rerun pytest gates/ -k transport once /state "
      "shows the runners, else delete and re-place the instance (the gate already tried the runners' own "
      "hostfile lines and a chat through every node)", "verdict fact `no_runner_map`",
      fact(Fact.no_runner_map)),
    S("H1", ("chat",), "No instance found for the model",
      "`model` is not the instance's full id, or the instance is gone",
      "curl -s <api>/state | jq '.instances[][].shardAssignments.modelId'", "HTTP 404 / log NO_INSTANCE",
      any_of(_http_status(404), http_body("NO_INSTANCE"))),
    S("H2", ("chat", "bench"), "Generation failed mid-request (HTTP 200, cut body or SSE error)",
      "Runner died mid-request (F5/F6/G*)", "read RunnerFailed and the runner stderr log; re-place the instance",
      "chat error kind truncated|stream_error|no_done or log RUNNER_MIDREQ",
      any_of(_chat_kind("truncated", "stream_error", "no_done"), log("RUNNER_MIDREQ"))),
    S("H3", ("chat", "bench"), "Stream stalls (keep-alives only) or request hangs",
      "Collective deadlock, runner churn, API paused during an election",
      "curl -s -X POST <api>/v1/cancel/<command_id> (the stalled request's id); delete and re-place the "
      "instance; --no-batch to isolate",
      "chat error kind stalled|timeout", _chat_kind("stalled", "timeout")),
    S("I1", CANARY_START, "API port already in use", "Another exo (app or CLI) or another program holds the port",
      "lsof -nP -iTCP:<port> -sTCP:LISTEN; stop that pid or pass --stop-existing-exo if it is exo",
      "log PORT_IN_USE or verdict fact `port_held`", any_of(fact(Fact.port_held), log("PORT_IN_USE"))),
    S("I2", CANARY_START, "exo's pid-file lock is held", "A second exo for the same user (~/.exo/exo.pid)",
      "cat ~/.exo/exo.pid; ps -o command= -p <pid>; stop it or --stop-existing-exo",
      "log PIDFILE or verdict fact `pid_lock`", any_of(fact(Fact.pid_lock), log("PIDFILE"))),
    S("I3", ("cluster",), "Two exo processes on one Mac", "App and CLI both running", "run exactly one exo per Mac",
      "/state: two node ids with the same friendlyName", _duplicate_friendly),
    S("X-EXIT", CANARY_START, "exo exited during startup",
      "Bad flag, fatal environment check, or a crash at import (the traceback is in the captured stdout/stderr)",
      "cat <EXO_LOG_DIR>/<run>-node<k>-*.log", "verdict fact `exited` (before the API answered)", _exited_before_up),
    S("X-RESTART", ("startup",), "exo crashed or restarted within the settle window (crash loop)",
      "exo dies some seconds after start (a supervisor such as the app or launchd would restart it: a crash "
      "loop), or it re-executed itself with a new node id",
      "tail the captured log and exo.log; launchctl list | grep -i exo", "verdict fact `restarted`",
      fact(Fact.restarted)),
    S("SEED-HF-MISSING", ("preflight", "node1_download"), "hf missing on a node",
      "HF_CMD_NODEk does not exist on that node (the exec PATH has no /opt/homebrew/bin)",
      "ssh <node> ls -l <HF_CMD_NODEk>; brew install huggingface-cli or set HF_CMD_NODEk",
      "log `hf: command not found` / exit 127", lambda c: next(
          (f"{n}: {line.strip()[:200]}" for n, t in c.logs.items() for line in (t or '').splitlines()
           if "command not found" in line or "No such file or directory" in line and "hf" in line), None)),
    S("SEED-MAP-LAG", ("placement", "chat"), "/state runner maps lag while chat works",
      "A node's /state has not caught up (or reset after a re-election); nodeToRunner is evidence, not a verdict",
      "none needed; re-read /state later", "verdict fact `runner_lag` (chat passed)", fact(Fact.runner_lag)),
    S("SEED-OFFLINE-JOIN", ("cluster",), "Cluster isolated while the joins ran offline",
      "exo was started with --offline (EXO_OFFLINE=true) for the join; the guide validates joins with "
      "EXO_OFFLINE=false and the same flags on every node",
      "rerun the join online: pytest gates/ -k 'startup or cluster' --online",
      "verdict facts `isolated` and `offline_join`", lambda c: "joins ran offline" if c.facts.get(Fact.isolated)
      and c.facts.get(Fact.offline_join) else None),
    S("SEED-NO-RUNNERS", ("placement",), "Fast stop: repeated create with nodeToRunner=0 and no successful chat",
      "The instance never got runners on any node and no node serves the model (runner start failed before "
      "reporting, a node without the model, or the workers never took the instance)",
      "read every node's exo log (runner lines); pytest gates/ -k 'startup or cluster or placement' after fixing it",
      "verdict fact `no_runners_no_chat`", fact(Fact.no_runners_no_chat)),
    S("SEED-LATE-CRASH", ("chat", "bench"), "Runs crash late (runner terminated after Ready)",
      "Memory growth, leaks or a GPU timeout under sustained load",
      "log show --last 1h ... memorystatus; tail the runner stderr log",
      "log RUNNER_TERM", log("RUNNER_TERM")),
)
BY_ID = {s.id: s for s in TABLE}


def match(gate: str, logs: dict[Any, str] | None = None, state: dict | None = None, http: dict | None = None,
          facts: dict | None = None) -> list[Matched]:
    """Signatures for `gate` whose condition holds, strongest (most specific) first as listed in TABLE."""
    ctx = Ctx(gate, {str(k): v for k, v in (logs or {}).items()}, state, http, checked_facts(facts))
    out = []
    for sig in TABLE:
        if gate not in sig.gates:
            continue
        try:
            hit = sig.test(ctx)
        except Exception:  # noqa: BLE001 - a broken matcher must not hide the failure
            hit = None
        if hit:
            out.append(Matched(sig, hit, filled(sig.next_command, ctx.facts)))
    return out


def table_rows() -> list[dict]:
    return [s.row() for s in TABLE]

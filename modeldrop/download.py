"""`hf download` on a node, with live progress heartbeats and the hub's reason when it fails.

`plan_download(cfg, k, expectation, limit_s)` is node k's download as the run configures it (`DownloadPlan`:
hf at HF_CMD_NODEk into MODEL_DIR_NODEk, HF_INCLUDE, HF_REVISION, the hub's endpoint and token, the total it
should reach, the node-side limit and the stall window). `run_hf_download(node, plan, heartbeat)` runs
`<hf_cmd> download <model> --local-dir <dir> [--include p]… [--revision r] --format json` on the node (env in
the command; HF_TOKEN travels on the command's stdin, never on a command line, is redacted everywhere, and is
refused for a plain-http non-loopback HF_ENDPOINT unless `allow_insecure_hub`), and while it runs polls the
`dirsize` probe on a second channel at least every `interval_s` seconds, calling `heartbeat` with a line like
`node1 download: 12.0 MiB / 34.5 MiB (35%), 4.1 MiB/s, ETA 0:05`. hf's retry / rate-limit warnings are
passed on as heartbeats too. An exit code of 0 is not proof of a complete download (the verify gate
decides); `hub_reason` says what the hub answered when hf reports it, and `download_verdict` is the
download gate's judgement of a result.

hf runs under `Node.supervise`: it ends on the node by itself when its limit (plus the node's slack) has
passed or the controller's connection is gone, it is recorded on the node while it runs (the next run's
preflight finds it if it outlived a crashed controller), and with a stall window it is stopped on the node
when no new byte arrived under the target dir for that long: `DownloadResult.stalled`, with a reason naming
the endpoint and the last file hf started (a slow link still brings bytes; a hub that stopped answering none).
The limit a gate gives hf follows the gate's own (`hf_limit_for_gate`), so `modeldrop_gate_timeouts
download=28800` lengthens the download too.

`run_download(node, plan, heartbeat, on_attempt, cancel)` is the gate's download: hf is run up to `plan.attempts`
times within the plan's one limit. An attempt that failed (hf's rc, a stall) or that exited 0 but left a
partial-download marker this run made (a marker already there before the first attempt and untouched since is
left to the verify gate: an orphan of an earlier run) is run again after `backoff_s`, doubling, and hf resumes what
it has; an answer that will not change (repository or revision not found, gated, refused token, no space, hf's
limit reached) is not retried. Each attempt is a progress line and an `Attempt` passed to `on_attempt` (the
ledger's event); the result lists them all, and `download_verdict` names every attempt's cause.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from modeldrop import hub
from modeldrop.config import HF_ENV_KEYS, RunConfig, field_of
from modeldrop.errors import CommandTimeout, NodeError
from modeldrop.nodes import Node, tail
from modeldrop.verdict import Verdict

HF_QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
MiB = 1024 * 1024
TIMEOUT_RC = 124
STALL_RC = 3  # what a stalled download's result says in place of hf's own rc (hf was stopped)
DEFAULT_HUB = "https://huggingface.co"
HF_DOWNLOAD_TIMEOUT_S = 4 * 3600.0  # the limit of one `hf download` under the gate table's download limit
STOP_GRACE_S = 10.0
PROBE_TIMEOUT_S = 60.0
# after the timeout: the progress thread's last probe, then finding and stopping the remote hf
CLEANUP_BUDGET_S = 3 * PROBE_TIMEOUT_S + STOP_GRACE_S + 5 * 60
# what a download gate spends besides hf itself: the hub look-up for the total, the cleanup, a margin
GATE_OVERHEAD_S = 900.0
_FORWARD = re.compile(r"rate limit|retry|retrying|429|5\d\d |resume|warning|error", re.I)
# hub answers another attempt will not change
_PERMANENT = re.compile(r"\b(File|Entry|Model|Revision|Repository)\b[^.\n]{0,80}\bnot found|NotFoundError|"
                        r"GatedRepoError|gated repo|401 Unauthorized|403 Forbidden|No files matched|"
                        r"No space left on device|Errno 28", re.I)
_TRANSIENT = re.compile(r"\b(429|5\d\d)\b|Server error|timed? ?out|Connection|Too Many Requests", re.I)
MIN_ATTEMPT_S = 60.0  # an attempt is not started with less of hf's limit left than this
MAX_BACKOFF_S = 600.0
_KNOWN_REASONS = tuple(re.compile(rx + r"[^\n]*", re.I) for rx in (
    r"429 Too Many Requests", r"Repository Not Found|RepositoryNotFoundError", r"Revision Not Found",
    r"GatedRepoError|gated repo", r"401 Unauthorized|403 Forbidden", r"No files matched",
    r"Returning existing local_dir", r"Consistency check failed", r"No space left on device"))


@dataclass
class DownloadResult:
    """What `hf download` did on the node (tails redacted)."""

    rc: int
    reported_path: str | None
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    hub_reason: str | None
    timed_out: bool = False
    heartbeats: list[str] = field(default_factory=list)
    stalled: bool = False
    refused: bool = False  # nothing ran: the token may not go to the endpoint
    attempts: list[Attempt] = field(default_factory=list)
    markers_left: list[str] = field(default_factory=list)  # partial-download markers this run's hf left


@dataclass(frozen=True)
class Attempt:
    """One run of hf within a node's download: number `n` of `of`, hf's rc, why it failed (None: it did not), how
    long it took, and the wait before the next attempt (None when none follows)."""

    node: str
    n: int
    of: int
    rc: int
    cause: str | None
    duration_s: float
    retry_in_s: float | None = None
    why_not_retried: str | None = None

    def line(self) -> str:
        """The attempt's progress line, e.g. `node1 download: attempt 1 of 3 failed (rc 1): …; next attempt in 30s`."""
        head = f"{self.node} download: attempt {self.n} of {self.of}"
        if self.cause is None:
            return f"{head} succeeded ({self.duration_s:.0f}s)"
        if self.retry_in_s is not None:
            nxt = f"next attempt in {self.retry_in_s:g}s (hf resumes what it has)"
        else:
            nxt = self.why_not_retried or "no attempt left"
        return f"{head} failed (rc {self.rc}) after {self.duration_s:.0f}s: {self.cause}; {nxt}"


def hf_limit_for_gate(gate_limit_s: float | None) -> float:
    """hf's limit inside a download gate whose limit is gate_limit_s (None: the gate table's): the gate's limit
    less what the gate spends besides hf (GATE_OVERHEAD_S), never below a minute."""
    if gate_limit_s is None:
        return HF_DOWNLOAD_TIMEOUT_S
    return max(60.0, float(gate_limit_s) - GATE_OVERHEAD_S)


@dataclass(frozen=True)
class DownloadPlan:
    """One node's `hf download`: hf at `hf_cmd` fetches `model_id` (`include`, `revision`) into `local_dir`
    with `env` (HF_ENDPOINT; an HF_TOKEN in it travels on stdin only), ending on the node after `timeout_s` or
    after `stall_s` without a new byte (0: no stall window); progress is measured against `expected_bytes`
    every `interval_s` seconds."""

    hf_cmd: str
    model_id: str
    local_dir: str
    include: tuple[str, ...] = ()
    revision: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    allow_insecure_hub: bool = False
    expected_bytes: int | None = None
    timeout_s: float = HF_DOWNLOAD_TIMEOUT_S
    stall_s: float = 0.0
    interval_s: float = 10.0
    exclude: tuple[str, ...] = ()
    max_workers: int | None = None
    attempts: int = 1  # runs of hf within timeout_s (run_download)
    backoff_s: float = 30.0  # the wait before the second attempt, doubling for each further one


def hub_env(cfg: RunConfig) -> dict[str, str]:
    """The environment hf needs on a node for the run's hub: HF_ENDPOINT and HF_TOKEN when set, and every HF_*
    setting of the allow-list (`config.HF_ENV_KEYS`) the operator set (booleans as 1/0)."""
    env = {k: v for k, v in (("HF_ENDPOINT", cfg.hf_endpoint), ("HF_TOKEN", cfg.hf_token)) if v}
    for key in HF_ENV_KEYS:
        value = getattr(cfg, field_of(key))
        if value is not None:
            env[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env


def expected_total(cfg: RunConfig, expectation: hub.HubExpectation | None = None) -> int | None:
    """Total bytes a complete download holds: the hub's manifest (given with --online), else one bounded hub
    look-up per run (none when the online look-up already failed), else the profile's `total_size_bytes`
    (None when nothing knows)."""
    expectation = expectation or hub.HubExpectation()
    if expectation.manifest is not None:
        return expectation.manifest.total_size
    total = None
    if expectation.error is None:
        total = hub.total_size(cfg.model_id, cfg.hf_revision, tuple(cfg.include), cfg.hf_endpoint, cfg.hf_token,
                               cfg.allow_insecure_hub, hub.lookup_timeout(cfg.stall_window_s), tuple(cfg.exclude))
    return total if total is not None else (cfg.profile or {}).get("total_size_bytes")


def plan_download(cfg: RunConfig, k: int, expectation: hub.HubExpectation | None = None,
                  limit_s: float = HF_DOWNLOAD_TIMEOUT_S) -> DownloadPlan:
    """Node k's own download from the hub into MODEL_DIR_NODEk, as the run configures it (`expectation`: the
    hub's manifest when the run has it; `limit_s`: hf's limit, see `hf_limit_for_gate`)."""
    nc = cfg.node(k)
    return DownloadPlan(hf_cmd=nc.hf_cmd, model_id=cfg.model_id, local_dir=nc.model_dir, include=cfg.include,
                        revision=cfg.hf_revision, env=hub_env(cfg), allow_insecure_hub=cfg.allow_insecure_hub,
                        expected_bytes=expected_total(cfg, expectation), timeout_s=limit_s,
                        stall_s=cfg.stall_window_s, exclude=cfg.exclude, max_workers=cfg.hf_max_workers,
                        attempts=cfg.download_attempts, backoff_s=cfg.download_backoff_s)


def download_verdict(k: int, plan: DownloadPlan, result: DownloadResult, stopped: str | None = None) -> Verdict:
    """The download gate's judgement: hf exited 0, left no partial-download marker of its own, and nothing stopped
    it (a stop names why: another node's download failed, or the session ended; a stall names the hub that stopped
    answering). After several attempts a failure names every attempt's cause. A failure's problem is its one-line
    evidence, its summary the gate's message."""
    what = f"node{k}: hf download {plan.model_id} into {plan.local_dir}"
    if stopped:
        return Verdict.failed(f"node{k} hf download stopped: {stopped}", summary=f"{what} stopped because {stopped}")
    failed = [a for a in result.attempts if a.cause is not None]
    if len(result.attempts) > 1 and failed and failed[-1] is result.attempts[-1]:
        causes = attempt_causes(result.attempts)
        return Verdict.failed(f"node{k} hf download failed {len(failed)} of {len(result.attempts)} attempts: "
                              f"{causes}", summary=f"{what} failed after {len(result.attempts)} attempts: {causes}")
    if result.markers_left:
        left = "; ".join(result.markers_left[:5]) + (" …" if len(result.markers_left) > 5 else "")
        return Verdict.failed(f"node{k} hf download exited 0 but left partial-download markers: {left}",
                              summary=f"{what} exited 0 but left {len(result.markers_left)} partial-download "
                                      f"marker(s): {left}")
    if result.stalled:
        return Verdict.failed(f"node{k} hf download stalled: {result.hub_reason}",
                              summary=f"{what} stalled: {result.hub_reason}")
    if result.rc != 0:
        reason = result.hub_reason or (result.stderr_tail.strip().splitlines() or ["no output"])[-1]
        return Verdict.failed(f"node{k} hf download rc {result.rc}: {reason}",
                              summary=f"{what} failed (rc {result.rc}): {reason}")
    return Verdict.passed(f"{what} exited 0", {"rc": 0, "path": result.reported_path})


def attempt_causes(attempts: Sequence[Attempt]) -> str:
    """Every failed attempt's cause in one line, consecutive identical causes together
    (`attempts 1, 2 (rc 1): 500 …; attempt 3 (rc 3): no new byte …`)."""
    groups: list[tuple[list[int], int, str]] = []
    for a in attempts:
        if a.cause is None:
            continue
        if groups and groups[-1][1:] == (a.rc, a.cause):
            groups[-1][0].append(a.n)
        else:
            groups.append(([a.n], a.rc, a.cause))
    return "; ".join(f"attempt{'s' if len(ns) > 1 else ''} {', '.join(map(str, ns))} (rc {rc}): {cause}"
                     for ns, rc, cause in groups)


def hf_download_argv(hf_cmd: str, model_id: str, local_dir: str, include: Sequence[str] = (),
                     revision: str | None = None, exclude: Sequence[str] = (),
                     max_workers: int | None = None) -> list[str]:
    """The argv of the download command; option values are attached (`--revision=-x` stays a value)."""
    argv = [hf_cmd, "download", model_id, f"--local-dir={local_dir}"]
    argv += [f"--include={pattern}" for pattern in include]
    argv += [f"--exclude={pattern}" for pattern in exclude]
    if revision:
        argv.append(f"--revision={revision}")
    if max_workers:
        argv.append(f"--max-workers={max_workers}")
    return argv + ["--format", "json"]


def hub_reason(stderr: str) -> str | None:
    """The hub's reason from hf's stderr: its `Error: …` line, else a known HTTP/hub message, else the
    exception line of a traceback; None when there is nothing notable."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("Error:"):
            nxt = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith(("Hint:", "Error:")) else ""
            line = line.split(" For more information check:")[0]
            nxt = "" if nxt.startswith("For more information check") else nxt
            return (line[len("Error:"):].strip() + (" " + nxt if nxt and len(nxt) < 200 else "")).strip()
    for rx in _KNOWN_REASONS:
        m = rx.search(stderr)
        if m:
            return m.group(0).strip()
    if any(ln.startswith("Traceback") for ln in lines):
        exc = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", ln)]
        return exc[-1] if exc else lines[-1]
    return None


def parse_reported_path(stdout: str) -> str | None:
    """The `path` of the last JSON object hf printed with --format json."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("path"):
                return str(data["path"])
    return None


def fmt_eta(seconds: float) -> str:
    """h:mm:ss or m:ss."""
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(node_name: str, done: int, expected: int | None, rate: float, eta: float | None) -> str:
    """`node1 download: 12.0 MiB / 34.5 MiB (35%), 4.1 MiB/s, ETA 0:05` (no total/%/ETA when unknown)."""
    head = f"{node_name} download: {done / MiB:.1f} MiB"
    if expected:
        pct = min(100, round(100 * done / expected))
        head += f" / {expected / MiB:.1f} MiB ({pct}%)"
    line = f"{head}, {rate / MiB:.1f} MiB/s"
    if expected and eta is not None:
        line += f", ETA {fmt_eta(eta)}"
    return line


class _Progress:
    """Polls dirsize on the node every interval and reports progress lines until stopped."""

    def __init__(self, node: Node, local_dir: str, expected: int | None, emit: Callable[[str], None],
                 interval_s: float):
        self.node, self.local_dir, self.expected, self.emit = node, local_dir, expected, emit
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"progress-{node.name}", daemon=True)
        self.start_bytes: int | None = None

    def _size(self) -> int | None:
        try:
            return int(self.node.run_probe("dirsize", {"path": self.local_dir},
                                           timeout=max(30.0, self.interval_s * 3))["bytes"])
        except NodeError as exc:
            self.emit(f"{self.node.name} download: progress probe failed: {exc}")
            return None

    def _loop(self) -> None:
        t0 = time.monotonic()
        self.start_bytes = self._size() or 0
        prev_t, prev_b = t0, self.start_bytes
        due = t0 + self.interval_s  # a fixed cadence: the probe's own round trip must not stretch the gaps
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            due = max(due + self.interval_s, time.monotonic())
            b = self._size()
            if b is None:
                continue
            now = time.monotonic()
            rate = max(0.0, (b - prev_b) / max(now - prev_t, 1e-6))
            avg = (b - self.start_bytes) / max(now - t0, 1e-6)
            eta = (max(0, self.expected - b) / avg) if self.expected and avg > 0 else None
            self.emit(progress_line(self.node.name, b, self.expected, rate, eta))
            prev_t, prev_b = now, b


class _HfLines:
    """The remote hf's output lines: retry / rate-limit / error lines become heartbeats."""

    def __init__(self, node: Node, emit: Callable[[str], None]):
        self.node, self.emit = node, emit

    def __call__(self, stream: str, line: str) -> None:
        if stream == "stderr" and line.strip() and _FORWARD.search(line):
            self.emit(f"{self.node.name} hf: {line.strip()[:300]}")


def last_file(paths: Sequence[str]) -> str | None:
    """The file hf was downloading last, from the files under the target dir (newest first): hf takes
    `.cache/huggingface/download/<file>.lock` when it starts <file> and puts <file> in place when it is complete,
    so the newest lock without its file, else the newest lock, else the newest file."""
    marker = ".cache/huggingface/download/"
    present = set(paths)
    locked = [p[len(marker):-len(".lock")] for p in paths if p.startswith(marker) and p.endswith(".lock")]
    pending = [f for f in locked if f not in present]
    plain = [p for p in paths if not p.startswith(".cache/")]
    return (pending or locked or plain or [None])[0]


def stall_reason(endpoint: str | None, target_dir: str, still_s: float | None, stall_s: float,
                 files: Sequence[str]) -> str:
    """One line: the hub stopped answering (not a slow link), where, since when, and what to do."""
    where = endpoint or DEFAULT_HUB
    last = last_file(files)
    return (f"no new byte under {target_dir} for {still_s or stall_s:g}s (stall window {stall_s:g}s): the hub at "
            f"{where} stopped answering ({f'last file: {last}' if last else 'no file started'}); a slow link still "
            f"brings bytes, this brought none. Check that {where} answers from the node, then run again "
            f"with --resume-bootstrap")


def run_hf_download(node: Node, plan: DownloadPlan, heartbeat: Callable[[str], None]) -> DownloadResult:
    """Run the plan's hf download on the node with progress heartbeats; see the module docstring. When the token
    may not go to HF_ENDPOINT (the plan's, else the node's own environment's: hub.node_endpoint_problem) nothing
    runs and the result says why (rc 2)."""
    env = dict(plan.env)
    token = env.pop("HF_TOKEN", None) or None
    node_env = node.facts().get("hf_endpoint_env") if token and not env.get("HF_ENDPOINT") else None
    refused = hub.node_endpoint_problem(env.get("HF_ENDPOINT"), node_env, token, plan.allow_insecure_hub)
    if refused:  # nothing runs: the token must not leave for this endpoint
        return DownloadResult(2, None, "", "", 0.0, refused, refused=True)
    env = {k: node.expand_path(v) for k, v in {**HF_QUIET_ENV, **env}.items()}  # HF_HOME=~/… too
    secret_env = {"HF_TOKEN": token} if token else {}
    secrets = [token] if token else []
    unset = [] if "HF_HUB_OFFLINE" in env else ["HF_HUB_OFFLINE"]
    hf_path, target_dir = node.expand_path(plan.hf_cmd), node.expand_path(plan.local_dir)
    argv = hf_download_argv(hf_path, plan.model_id, target_dir, plan.include, plan.revision, plan.exclude,
                            plan.max_workers)
    timeout, interval_s, stall_s = plan.timeout_s, plan.interval_s, plan.stall_s
    beats: list[str] = []

    def emit(line: str) -> None:
        beats.append(line)
        heartbeat(line)

    progress = _Progress(node, target_dir, plan.expected_bytes, emit, interval_s)
    progress.thread.start()
    t0 = time.monotonic()
    try:
        res = node.supervise(argv, timeout=timeout, what=f"hf download {plan.model_id}", env=env, unset_env=unset,
                             secret_env=secret_env, secrets=secrets, on_line=_HfLines(node, emit),
                             stall_dir=target_dir, stall_s=stall_s)
    except CommandTimeout as exc:  # the supervised hf was stopped by pid before this was raised
        progress.stop.set()
        stopped = str(exc).split("; ", 1)[1] if "; " in str(exc) else "stop not confirmed"
        stray = stop_stray_download(node, hf_path, target_dir)
        return DownloadResult(TIMEOUT_RC, None, "", tail(exc.partial), time.monotonic() - t0,
                              f"hf download timed out after {timeout:g}s; {stopped}; {stray}", True, beats)
    finally:
        progress.stop.set()
        progress.thread.join(timeout=max(PROBE_TIMEOUT_S, interval_s * 3) + 5)
    if res.ended == "stalled":
        reason = stall_reason(env.get("HF_ENDPOINT"), target_dir, res.still_s, stall_s, res.last_files)
        return DownloadResult(STALL_RC, None, tail(res.stdout), tail(res.stderr), res.duration_s, reason, False,
                              beats, stalled=True)
    return DownloadResult(res.rc, parse_reported_path(res.stdout), tail(res.stdout), tail(res.stderr),
                          res.duration_s, hub_reason(res.stderr), False, beats)


def stop_stray_download(node: Node, hf_path: str, local_dir: str) -> str:
    """After a timeout the remote hf may still run (closing an SSH channel does not kill it): stop the hf
    processes downloading into local_dir, identified by exe/argv and start time. Returns what was done."""
    try:
        found = node.run_probe("procs", {"pids": None, "exe_paths": [hf_path]}, timeout=PROBE_TIMEOUT_S)["procs"]
        mine = [p for p in found if "download" in p["cmdline"]
                and (f"--local-dir={local_dir}" in p["cmdline"] or local_dir in p["cmdline"])]
        results = [node.run_probe("stop", {"pid": p["pid"], "expect_start": p["start"],
                                           "expect_argv0": p["cmdline"][0], "grace_s": STOP_GRACE_S},
                                  timeout=STOP_GRACE_S + PROBE_TIMEOUT_S)["result"]
                   for p in mine]
    except NodeError as exc:
        return f"could not stop the remote hf: {exc}"
    return f"stopped {len(results)} leftover hf process(es): {', '.join(results)}" if results else \
        "no hf process left running"


MarkerSnapshot = dict[str, tuple[int, float]]


def marker_snapshot(node: Node, local_dir: str) -> MarkerSnapshot | None:
    """The partial-download markers under the node's local_dir (`.cache/huggingface` included): {relative path:
    (size, mtime)}; None when the node cannot say (the marker check is then skipped; verify still decides)."""
    try:
        found = node.run_probe("dirsize", {"path": local_dir, "markers": True}, timeout=PROBE_TIMEOUT_S)
    except NodeError:
        return None
    return {m["path"]: (int(m["size"]), float(m["mtime"])) for m in found.get("markers") or []}


def markers_made(before: MarkerSnapshot | None, after: MarkerSnapshot | None) -> list[str]:
    """Markers present after an attempt that were not there before the first one, or changed since: left by this
    run's hf (an unchanged one is an earlier run's orphan, the verify gate's to report)."""
    if before is None or after is None:
        return []
    return sorted(p for p, stat in after.items() if before.get(p) != stat)


def attempt_cause(res: DownloadResult) -> str | None:
    """Why one run of hf failed, in one line (None when it exited 0)."""
    if res.rc == 0:
        return None
    if res.stalled or res.timed_out or res.refused:
        return res.hub_reason or "stopped"
    return res.hub_reason or (res.stderr_tail.strip().splitlines() or ["no output"])[-1].strip()


def not_retried(res: DownloadResult) -> str | None:
    """Why a failed attempt is not worth another one (the answer will not change), else None."""
    if res.refused:
        return "not retried: the token may not go to this endpoint"
    if res.timed_out:
        return "not retried: hf's limit is spent"
    if res.rc in (126, 127):
        return f"not retried: {'no such' if res.rc == 127 else 'cannot run the'} hf program"
    cause = attempt_cause(res) or ""
    if _PERMANENT.search(cause) and not _TRANSIENT.search(cause):
        return "not retried: the hub's answer will not change"
    return None


def backoff_for(n: int, base_s: float) -> float:
    """The wait after attempt n: base, then doubling, at most MAX_BACKOFF_S."""
    return min(MAX_BACKOFF_S, base_s * 2 ** (n - 1))


def run_download(node: Node, plan: DownloadPlan, heartbeat: Callable[[str], None], *,
                 on_attempt: Callable[[Attempt], None] | None = None,
                 cancel: threading.Event | None = None) -> DownloadResult:
    """The plan's download with wait-and-retry (see the module docstring): up to `plan.attempts` runs of hf, all
    within `plan.timeout_s`; `cancel` set (the download is being stopped) ends it before the next attempt or
    during a wait. Returns the last attempt's result with every attempt, all heartbeats and the whole time."""
    cancel = cancel or threading.Event()
    t0 = time.monotonic()
    deadline = t0 + plan.timeout_s
    before = marker_snapshot(node, plan.local_dir) if plan.attempts > 1 else None
    attempts: list[Attempt] = []
    beats: list[str] = []

    def emit(line: str) -> None:
        beats.append(line)
        heartbeat(line)

    n = 0
    while True:
        n += 1
        if n > 1:
            emit(f"{node.name} download: attempt {n} of {plan.attempts}")
        started = time.monotonic()
        res = run_hf_download(node, replace(plan, timeout_s=max(1.0, deadline - started)), emit)
        cause, why_not = attempt_cause(res), not_retried(res)
        if cause is None and before is not None:
            res.markers_left = markers_made(before, marker_snapshot(node, plan.local_dir))
            if res.markers_left:
                cause = (f"hf exited 0 but left {len(res.markers_left)} partial-download marker(s): "
                         f"{'; '.join(res.markers_left[:3])}")
        wait = backoff_for(n, plan.backoff_s)
        if cause is not None and why_not is None:
            if n >= plan.attempts:
                why_not = "no attempt left"
            elif cancel.is_set():
                why_not = "not retried: the download is being stopped"
            elif deadline - time.monotonic() - wait < MIN_ATTEMPT_S:
                why_not = f"not retried: less than {MIN_ATTEMPT_S:g}s of hf's limit would be left"
        attempt = Attempt(node.name, n, plan.attempts, res.rc, cause, time.monotonic() - started,
                          wait if cause is not None and why_not is None else None, why_not)
        attempts.append(attempt)
        if on_attempt is not None:
            on_attempt(attempt)
        if cause is not None or n > 1:
            emit(attempt.line())
        if attempt.retry_in_s is None or cancel.wait(attempt.retry_in_s):
            break
    res.attempts, res.heartbeats, res.duration_s = attempts, beats, time.monotonic() - t0
    return res

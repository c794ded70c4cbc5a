"""ExoCluster: the run's exo processes (canary and cluster), their APIs, logs and failure evidence.

Lifecycle contract (fixtures/exo.py applies it):
- `start()` prechecks every node first (nothing starts if any node has a problem), then starts exo
  on every node with identical flags (`ExoLauncher.command("cluster")`).
- `ensure_running()` is what gates after startup call: in a session that did not run `startup`
  (a `-k` rerun whose startup pass was reused) it re-attaches to the cluster the latest earlier run
  left serving — each node's launch record (`reports/<run>/exo/node<k>-cluster.json`) must name a
  live process with the same start time, and that node's `/node_id` must answer — and copies the
  records into this run's folder. Otherwise it raises `ReattachError` saying what is missing.
- `start_join_watch(ids)` (the startup gate calls it once every API answered) watches the cluster join
  in the background, so the startup settle window overlaps the join wait (its progress lines, gate
  `cluster`, go to `sink`); `cluster_verdict(ids, window)`
  (the cluster gate) waits for that watch when it watches the same node ids, then confirms with one
  fresh look, else polls itself. `stop_all()` and `cancel_join_watch()` end the watch.
- `stop_all()` stops by pid, identity-checked, everything this run started or adopted.
- `gone()` names the cluster's exo processes that died (a failing gate's evidence).
- `scan_logs(role)` and `log_tails(role)` fetch the nodes' logs (probe `tail`) for a failing gate's
  evidence, each only from where it stood when its exo was launched (`LaunchRecord.log_marks`); matching
  them against the signature table is the caller's (this package never imports it).
- `keep_logs(role)` copies each node's logs of `role` into the run folder (`logs/exo/node<k>-<role>-<log>.log`,
  the end kept, at most KEEP_LOG_BYTES each, secrets masked), whatever the outcome: the canary's when it stops,
  the cluster's at the end of the run or at teardown.
- `synch()` decides EXO_SYNCH_FLAG once for every node from each node's `exo --help` (the build `builds(k)` gives,
  the run's shared one, else each cluster launcher's own); every launcher, the canary's too, starts exo with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modeldrop import exo_flags
from modeldrop.config import RunConfig
from modeldrop.exo import logs as exologs
from modeldrop.exo import state as st
from modeldrop.exo.client import ExoClient
from modeldrop.exo.launcher import ExoBuild, ExoLauncher, LaunchError, LaunchRecord, RecordFolder, precheck_facts
from modeldrop.exo.observe import watch_cluster
from modeldrop.exo.serving import instance_shape, serving_block
from modeldrop.exo.wait import call_safely
from modeldrop.nodepool import NodePool
from modeldrop.pernode import each
from modeldrop.progress import Progress, Sink
from modeldrop.redaction import redact, secret_values
from modeldrop.verdict import Verdict

EVIDENCE_TAIL_BYTES = 16 * 1024
KEEP_LOG_BYTES = 2 * 1024 * 1024  # each exo log kept in the run folder: its last 2 MiB


def stopped_existing_lines(rec: LaunchRecord) -> list[str]:
    """One line per process `--stop-existing-exo` stopped before launch record `rec`'s start (the gate records
    them as warnings: the suite stopped something it had not started)."""
    lines = [f"node{rec.node}: --stop-existing-exo stopped pid {p.get('pid')} "
             f"({' '.join(map(str, p.get('cmdline') or []))[:160]}): {p.get('result')}"
             for p in rec.stopped_existing if "from_run" not in p]
    return lines + [f"node{rec.node}: pid {p.get('pid')} of an earlier run's launch record ({p['from_run']}) was not "
                    f"all proven ours and was left running: {p.get('detail')}"
                    for p in rec.stopped_existing if "from_run" in p and p.get("result") in ("refused", "left-running")]


class ReattachError(Exception):
    """No cluster to re-attach to; the message says which node and why."""


@dataclass
class JoinWatch:
    """A background cluster-join watch over fixed node ids; `verdict` is set when `done`."""

    live_ids: dict[int, str]
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    verdict: Verdict | None = None


class ExoCluster:
    def __init__(self, cfg: RunConfig, pool: NodePool, run_folder: RecordFolder,
                 builds: Callable[[int], ExoBuild] | None = None, sink: Sink | None = None):
        self.cfg = cfg
        self.sink = sink  # progress lines of the cluster-join wait (`modeldrop.progress`), or None
        self.pool = pool
        self.run_folder = run_folder
        self.builds = builds  # node k's exo build as the run knows it (RunFacts.exo_build), else probed here
        self.launchers: dict[int, ExoLauncher] = {}
        self.running = False
        self.attached = False
        self.instance_id: str | None = None
        self.join_watch: JoinWatch | None = None
        self._synch: exo_flags.SynchChoice | None = None
        self.kept_logs: dict[str, str] = {}  # run-folder file -> the node's log it holds

    @property
    def ks(self) -> list[int]:
        return [n.index for n in self.cfg.nodes]

    def launcher(self, k: int, role: str = "cluster") -> ExoLauncher:
        key = k if role == "cluster" else -k
        if key not in self.launchers:
            build_of = (lambda k=k: self.builds(k)) if self.builds is not None else None
            self.launchers[key] = ExoLauncher(self.pool.get(k), self.cfg.node(k), self.cfg, self.run_folder,
                                              synch=self.synch, build_of=build_of)
        return self.launchers[key]

    def synch(self) -> exo_flags.SynchChoice:
        """EXO_SYNCH_FLAG decided once from every node's `exo --help` (a node whose exo cannot be probed is left
        out: its own start fails with the reason; the canary on node 1 does not fail for node 2)."""
        if self._synch is None:
            listed = {}
            for k in self.ks:
                try:
                    b = self.launcher(k).build()
                except Exception:  # noqa: BLE001 - a node that cannot say (unreachable, no exo) fails its own start
                    continue
                listed[k] = (b.exe, b.help_flags)
            self._synch = exo_flags.synch_choice(self.cfg.exo_synch_flag, listed)
        return self._synch

    def cluster_launchers(self) -> dict[int, ExoLauncher]:
        return {k: self.launcher(k) for k in self.ks}

    def clients(self) -> dict[int, ExoClient]:
        return {k: ExoClient(self.launcher(k).api_url) for k in self.ks}

    def urls(self) -> dict[int, str]:
        return {k: self.launcher(k).api_url for k in self.ks}

    # -- start / re-attach / stop -----------------------------------------------------------------
    def start(self) -> dict[int, LaunchRecord]:
        """Precheck every node, then start exo on every node; LaunchError names every problem."""
        problems = []
        for la in self.cluster_launchers().values():
            problems += la.precheck()
        if problems:
            raise LaunchError("; ".join(problems), precheck_facts(problems))
        recs = {k: la.start("cluster", precheck=False) for k, la in self.cluster_launchers().items()}
        self.running = True
        return recs

    def reattach(self) -> dict[int, str]:
        """Adopt the cluster an earlier run left serving; {k: node id} or ReattachError."""
        ids = {}
        for k in self.ks:
            la = self.launcher(k)
            recs = [r for r in la.previous() if r.role == "cluster" and not r.stopped]
            if not recs:
                raise ReattachError(f"node{k}: no launch record of a running cluster made on this node since its "
                                    f"last boot in the earlier run folders")
            live = self._first_live(la, recs)
            if live is None:
                raise ReattachError(f"node{k}: no process from the earlier runs' records is running any more "
                                    f"(newest: pid {recs[0].pid})")
            nid, err = call_safely(lambda la=la: ExoClient(la.api_url).node_id(timeout_s=5))
            if not nid:
                la.record = None
                raise ReattachError(f"node{k}: {la.api_url}/node_id does not answer ({err})")
            la.adopt(live)
            ids[k] = nid
        self.running = self.attached = True
        return ids

    @staticmethod
    def _first_live(la: ExoLauncher, recs: list[LaunchRecord]) -> LaunchRecord | None:
        seen = set()
        for rec in recs:
            if (rec.pid, rec.start) in seen:
                continue
            seen.add((rec.pid, rec.start))
            la.record = rec
            if la.proc() is not None:
                return rec
        la.record = None
        return None

    # -- cluster join ------------------------------------------------------------------------------
    def start_join_watch(self, live_ids: dict[int, str]) -> None:
        """Watch the cluster join of these node ids in a background thread. It starts before the settle window,
        so its deadline is that window plus the cluster window: the isolation stop comes no sooner than when
        the cluster gate started after the window."""
        self.cancel_join_watch()
        watch = JoinWatch(dict(live_ids))
        clients = self.clients()
        window = float(self.cfg.cluster_window_s) + float(self.cfg.settle_window_s)

        def run() -> None:
            try:
                watch.verdict = watch_cluster(clients, watch.live_ids, window, cancelled=watch.cancel.is_set,
                                              progress=Progress(self.sink, "cluster"), meta=self.cfg.instance_meta)
            finally:
                watch.done.set()
        self.join_watch = watch
        threading.Thread(target=run, name="cluster-join-watch", daemon=True).start()

    def cancel_join_watch(self) -> None:
        """End the background join watch, if any (nothing will read its verdict)."""
        if self.join_watch is not None:
            self.join_watch.cancel.set()
            self.join_watch = None

    def cluster_verdict(self, live_ids: dict[int, str], window_s: float) -> Verdict:
        """The cluster gate's verdict: the background watch's (when it watched these ids) confirmed by a fresh
        look, else a poll of its own."""
        watch = self.join_watch
        if watch is not None and watch.live_ids == live_ids:
            watch.done.wait(window_s + 60.0)
            self.join_watch = None
            if watch.verdict is not None and not watch.verdict.ok:
                watch.verdict.details["watched_from_startup"] = True
                return watch.verdict
            if watch.verdict is not None:
                v = watch_cluster(self.clients(), live_ids, window_s, meta=self.cfg.instance_meta)
                v.details["joined_during_startup_s"] = watch.verdict.details.get("elapsed_s")
                return v
        return watch_cluster(self.clients(), live_ids, window_s, progress=Progress(self.sink, "cluster"),
                             meta=self.cfg.instance_meta)

    def ensure_running(self) -> None:
        if not self.running:
            self.reattach()

    def node_ids(self) -> dict[int, str]:
        out = {}
        for k, c in self.clients().items():
            nid, _ = call_safely(lambda c=c: c.node_id(timeout_s=5))
            if nid:
                out[k] = nid
        return out

    def node_names(self, live_ids: dict[int, str] | None = None) -> dict[str, str]:
        """{node id: "node2 (user@host)"}: each node as configured, for messages that would otherwise name it by
        EXO's friendly name (two nodes on one host share it)."""
        ids = self.node_ids() if live_ids is None else live_ids
        return {nid: f"{self.cfg.node(k).name} ({self.cfg.node(k).target})" for k, nid in ids.items()}

    def stop_all(self) -> dict[str, Any]:
        """Stop every process this run started or adopted (canary included)."""
        self.cancel_join_watch()
        out = {}
        for key, la in self.launchers.items():
            if la.record is not None:
                res, err = call_safely(la.stop)
                out[f"node{abs(key)}-{la.record.role}"] = res or {"error": err}
        self.running = False
        return out

    def stop_canaries(self) -> dict[str, Any]:
        """Stop any canary still running (the canary never outlives its gate)."""
        out = {}
        for key, la in self.launchers.items():
            if key < 0 and la.record is not None and not la.record.stopped:
                res, err = call_safely(la.stop)
                out[f"node{abs(key)}-canary"] = res or {"error": err}
        return out

    # -- logs and failure evidence ----------------------------------------------------------------
    def scan_logs(self, role: str = "cluster", max_bytes: int = exologs.DEFAULT_TAIL_BYTES,
                  match: tuple[str, ...] = ()) -> dict[int, str]:
        """{k: captured stdout/stderr + exo.log} of this run's processes (not the append-only runner log), or with
        `match` (names of `exo.logs.RX`) every line since launch that matches; every node read at once."""
        las = {abs(key): la for key, la in self.launchers.items() if la.record is not None and la.record.role == role}
        texts = each(sorted(las), lambda k: exologs.logs_of(las[k].node, [las[k].record.log_path,
                                                                           las[k].record.exo_log_path], max_bytes,
                                                          las[k].record.log_marks, match))
        return {k: "\n".join(t.values()) for k, t in texts.items()}

    def log_tails(self, role: str = "cluster") -> dict[str, str]:
        """{log name: tail} of this run's `role` processes, as evidence for a failing gate; every node read at once."""
        las = {abs(key): la for key, la in self.launchers.items() if la.record is not None and la.record.role == role}

        def tails_of(k: int) -> dict[str, str]:
            rec = las[k].record
            labels = {rec.log_path: "stdout", rec.exo_log_path: "exo.log", rec.runner_log_path: "runner-stderr"}
            texts = exologs.logs_of(las[k].node, list(labels), EVIDENCE_TAIL_BYTES, rec.log_marks)
            return {f"node{k}-{role}-{labels[path]}": text for path, text in texts.items()}
        return {name: text for tails in each(sorted(las), tails_of).values() for name, text in tails.items()}

    def keep_logs(self, role: str = "cluster", max_bytes: int = KEEP_LOG_BYTES) -> dict[str, str]:
        """Copy the logs of this run's `role` processes into the run folder (see the module docstring);
        {run-folder file: node log}. A log that cannot be read is skipped (its gate said why already)."""
        secrets = secret_values(getattr(self.cfg, "values", None) or {})
        mine = [(abs(key), la) for key, la in sorted(self.launchers.items(), key=lambda kv: abs(kv[0]))
                if la.record is not None and la.record.role == role]

        def keep(k: int, la: ExoLauncher) -> dict[str, str]:  # one node's logs, in one round trip
            rec, out = la.record, {}
            assert rec is not None
            logs = (("stdout", rec.log_path), ("exo", rec.exo_log_path), ("runner-stderr", rec.runner_log_path))
            read = exologs.tails(la.node, [path for _, path in logs], max_bytes, rec.log_marks)
            for (label, path), r in zip(logs, read, strict=False):
                if not r.get("exists") or not r.get("text"):
                    continue
                cut = int(r.get("from") or 0)
                head = f"# node{k} {role} {label}: {r.get('expanded') or path}"
                head += (f" (bytes {cut}..{r.get('size')}: what this run wrote, its last {max_bytes} bytes at most)\n"
                         if cut else "\n")
                rel = f"logs/exo/node{k}-{role}-{label}.log"
                self.run_folder.write_text(rel, redact(head + str(r["text"]), secrets))
                out[rel] = str(r.get("expanded") or path)
            return out

        kept: dict[str, str] = {}
        if mine:  # the nodes side by side
            with ThreadPoolExecutor(max_workers=len(mine)) as pool:
                for part in pool.map(lambda kl: keep(*kl), mine):
                    kept.update(part)
        self.kept_logs.update(kept)
        return kept

    def gone(self) -> dict[int, str]:
        """{k: "pid N"} of the cluster processes this run started or adopted and did not stop that are no longer
        running (pid and start time checked, every node at once); a node whose probe fails is left out (unknown
        is not gone)."""
        las = {k: self.launchers[k] for k in self.ks if k in self.launchers and self.launchers[k].record is not None
               and self.launchers[k].record.role == "cluster" and not self.launchers[k].record.stopped}
        probed = each(sorted(las), lambda k: call_safely(las[k].proc))
        return {k: f"pid {las[k].record.pid}" for k, (row, err) in probed.items() if row is None and err is None}

    def serving(self) -> dict[str, Any]:
        """Where the model serves (`serving.serving_block`): each node's API URL and node id, the instance placed in
        this run (else the model's first), its sharding and kind, a curl through node 1."""
        inst = self.find_instance()
        sharding, kind = instance_shape(inst)
        return serving_block(self.cfg.model_id, {f"node{k}": u for k, u in self.urls().items()},
                             {f"node{k}": nid for k, nid in self.node_ids().items()},
                             inst.instance_id if inst else None, sharding, kind)

    def state_of(self, k: int = 1) -> dict | None:
        s, _ = call_safely(ExoClient(self.launcher(k).api_url).state)
        return s

    def find_instance(self) -> st.Instance | None:
        """The instance placed in this run (else the first of the model), as seen by the first node whose
        /state maps its runners (a node's runner map can lag while chat works), else as node 1 sees it."""
        first = None
        for k in self.ks:
            inst = self._instance_in(self.state_of(k) or {})
            if inst is not None and inst.node_to_runner:
                return inst
            first = first or inst
        return first

    def _instance_in(self, s: dict) -> st.Instance | None:
        insts = st.instances(s)
        if self.instance_id and self.instance_id in insts:
            return insts[self.instance_id]
        for_model = st.instances_for_model(s, self.cfg.model_id)
        return for_model[0] if for_model else None

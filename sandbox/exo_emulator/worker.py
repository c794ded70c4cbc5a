"""The Worker: node info and the runner plan; it runs the node's download coordinator (``coordinator``),
custom card sync (``card_sync``) and topology edge probes (``edges``).

Contract:
- publishes this node's identity/memory/disk/network (and NEW: backends) when started and after
  every master change; with ``--no-worker`` none of this runs (the node never appears in /state).
- after a master change: runners stopped, download and card bookkeeping forgotten, a forced download
  rescan (late by ``late_rescan_s`` when that fault is set).
- plans every ``worker_plan_s`` from the replicated state: CreateRunner, DownloadModel,
  ConnectToGroup (rank n-1 last), LoadModel (every node DownloadCompleted), StartWarmup (ranks > 0
  first); a failed runner is recreated with the same id after backoff; after 5 failures the
  instance is deleted (``Instance <iid> exceeded 5 retries, requesting deletion``).
"""

from __future__ import annotations

import copy
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

from .card_sync import CardSync
from .coordinator import DownloadCoordinator
from .edges import EdgeProber
from .ids import new_uuid
from .logs import logger
from .models import find_model
from .paths import default_models_dir, models_dirs
from .state import unwrap, utc_stamp
from .supervisor import Supervisor

W_PLAN = "exo.worker.main:plan_step:225"
MAX_RETRIES = 5
READYISH = ("RunnerReady", "RunnerRunning")


class Worker:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.cfg, self.cluster, self.node_id = node.cfg, node.cluster, node.node_id
        self.runners: dict[str, Supervisor] = {}
        self.failures: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}
        self.deleting: set[str] = set()
        self.lock = threading.RLock()
        self.stopped = threading.Event()
        self.epoch = 0
        self.downloads = DownloadCoordinator(node)
        self.cards = CardSync(node, self.downloads.scan)
        self.edges = EdgeProber(node)

    # ---- startup / reset -------------------------------------------------------------------------
    def start(self) -> None:
        if not any("macmon" in p for p in os.environ.get("PATH", "").split(":")):
            logger.warning("macmon not found, falling back to psutil...", "exo.utils.info_gatherer:_monitor:1")
        threading.Thread(target=self._plan_loop, name="worker-plan", daemon=True).start()
        threading.Thread(target=self.edges.run, args=(self.stopped,), name="edge-probe", daemon=True).start()
        threading.Thread(target=self.cards.run, args=(self.stopped,), name="custom-cards", daemon=True).start()
        if not self.node.args.no_downloads:
            threading.Thread(target=self.downloads.run_scans, args=(self.stopped,), name="download-scan",
                             daemon=True).start()

    def reset(self) -> None:
        """Master changed: kill runners, forget local progress, republish node info."""
        with self.lock:
            self.epoch += 1
            sups, self.runners = list(self.runners.values()), {}
            self.failures.clear()
            self.retry_at.clear()
            self.deleting.clear()
            self.downloads.sent.clear()
        for s in sups:
            s.stop()
        self.publish_info()
        self.cards.forget()
        if self.node.args.no_downloads:
            return
        late = self.cfg.faults.late_rescan_s
        if late:  # fault: the rescan after an election comes late (real EXO on 2 nodes offline: 46-57 s)
            epoch = self.epoch
            threading.Timer(late, lambda: self.epoch == epoch and self.downloads.scan(force=True)).start()
        else:
            self.downloads.scan(force=True)

    def publish_info(self) -> None:
        c = self.cfg
        ev: dict[str, Any] = {
            "type": "NodeInfo", "nodeId": self.node_id, "when": utc_stamp(),
            "identity": {"modelId": c.model_id, "chipId": c.chip_id, "friendlyName": c.friendly_name,
                         "osVersion": c.os_version, "osBuildVersion": c.os_build_version},
            "memory": {"ramTotal": {"inBytes": c.ram_total_bytes}, "ramAvailable": {"inBytes": c.ram_available_bytes},
                       "swapTotal": {"inBytes": 0}, "swapAvailable": {"inBytes": 0}},
            "network": {"interfaces": [{"name": "en0", "ipAddress": c.node_address, "interfaceType": "ethernet"}]},
            "rdmaCtl": {"enabled": False},
        }
        try:
            d = default_models_dir(self.node.paths)
            probe = d if d.exists() else self.node.paths.data_home
            probe.mkdir(parents=True, exist_ok=True)
            du = shutil.disk_usage(probe)
            ev["disk"] = {"total": {"inBytes": du.total}, "available": {"inBytes": du.free}}
        except OSError:
            pass
        if c.is_new:
            ev["backends"] = ["MlxCpu", "MlxMetal"]
        self.cluster.publish(ev)

    # ---- plan --------------------------------------------------------------------------------------
    def _plan_loop(self) -> None:
        while not self.stopped.wait(self.cfg.timing.worker_plan_s):
            try:
                self.plan_step()
            except Exception as exc:  # noqa: BLE001
                logger.error(f"worker plan error: {type(exc).__name__}: {exc}", W_PLAN)

    def plan_step(self) -> None:
        with self.cluster.cond:
            if self.cluster.master_id is None:
                return
            snap = copy.deepcopy(self.cluster.state.data)
        instances = {iid: unwrap(inst) for iid, inst in snap["instances"].items()}
        mine = {iid: b for iid, b in instances.items() if self.node_id in b["shardAssignments"]["nodeToRunner"]}
        self._drop_orphans(mine)
        for iid, body in mine.items():
            with self.lock:
                self._plan_instance(iid, body, snap)

    def _drop_orphans(self, mine: dict[str, Any]) -> None:
        live = {b["shardAssignments"]["nodeToRunner"][self.node_id] for b in mine.values()}
        with self.lock:
            gone = [rid for rid in self.runners if rid not in live]
            sups = [self.runners.pop(rid) for rid in gone]
        for s in sups:
            failed = s.status == "RunnerFailed"
            s.stop()
            if not failed:
                self.cluster.publish({"type": "RunnerDeleted", "runnerId": s.runner_id})

    def _plan_instance(self, iid: str, body: dict[str, Any], snap: dict[str, Any]) -> None:
        sa = body["shardAssignments"]
        rid = sa["nodeToRunner"][self.node_id]
        shard = unwrap(sa["runnerToShard"][rid])
        world, rank = shard["worldSize"], shard["deviceRank"]
        others = [r for r in sa["runnerToShard"] if r != rid]
        statuses = {r: (next(iter(snap["runners"][r])) if r in snap["runners"] else None) for r in sa["runnerToShard"]}
        other_failed = any(statuses[r] == "RunnerFailed" for r in others)
        sup = self.runners.get(rid)
        if sup is not None and other_failed and sup.status != "RunnerFailed":
            self.runners.pop(rid)
            sup.stop()
            self.cluster.publish({"type": "RunnerDeleted", "runnerId": rid})
            return
        if sup is None or (sup.status == "RunnerFailed" and not sup.alive):
            self._maybe_create(iid, body, rid, shard, other_failed, sup)
            return
        card = self.node.card_from_shard(shard)
        self.downloads.ensure(card, self._status_in(snap, self.node_id, card["model_id"]), sa["runnerToShard"][rid])
        mystat = statuses[rid]
        if mystat is None or sup.status != mystat:
            return
        self._advance(sup, body, snap, statuses, rank, world, card)

    def _maybe_create(self, iid: str, body: dict, rid: str, shard: dict, other_failed: bool,
                      old: Supervisor | None) -> None:
        if old is not None:
            if time.monotonic() < self.retry_at.get(rid, 0):
                return
            if self.failures.get(iid, 0) >= MAX_RETRIES:
                return
        elif other_failed:
            return
        self._create(iid, body, rid, shard)

    def _create(self, iid: str, body: dict, rid: str, shard: dict) -> None:
        logger.info("Worker plan: CreateRunner", W_PLAN)
        self._task("CreateRunner", iid)
        f = self.cfg.faults
        hosts = body.get("hostsByNode", {}).get(self.node_id, [])
        spec = {"runner_id": rid, "instance_id": iid, "rank": shard["deviceRank"], "world": shard["worldSize"],
                "start_layer": shard["startLayer"], "end_layer": shard["endLayer"], "hosts": hosts,
                "bind_addr": self.cfg.node_address, "generation": self.cfg.generation,
                "timing": {"ring_retry_s": list(self.cfg.timing.ring_retry_s),
                           "ring_connect_timeout_s": self.cfg.timing.ring_connect_timeout_s,
                           "load_layer_s": self.cfg.timing.load_layer_s},
                "ring_connect_error": f.ring_connect_error, "runner_never_ready": f.runner_never_ready,
                "runner_killed_signal": f.runner_killed_signal,
                "pythonpath": self.node.pythonpath,
                "runner_log_dir": str(self.node.paths.runner_log_dir) if self.cfg.is_new else None}
        sup = Supervisor(rid, iid, spec, self.cluster.publish, self._on_failed)
        self.runners[rid] = sup
        sup.start()

    def _on_failed(self, sup: Supervisor) -> None:
        with self.lock:
            iid = sup.instance_id
            if self.runners.get(sup.runner_id) is not sup:
                return
            n = self.failures.get(iid, 0) + 1
            self.failures[iid] = n
            lo, hi = self.cfg.timing.runner_backoff_s
            self.retry_at[sup.runner_id] = time.monotonic() + min(lo * 2 ** (n - 1), hi)
            if n >= MAX_RETRIES and iid not in self.deleting:
                self.deleting.add(iid)
                logger.info(f"Instance {iid} exceeded {MAX_RETRIES} retries, requesting deletion",
                            "exo.worker.main:_handle_runner_failure:215")
                self.cluster.command({"kind": "DeleteInstance", "instanceId": iid})

    @staticmethod
    def _status_in(snap: dict, nid: str, model_id: str) -> str | None:
        for dl in snap["downloads"].get(nid, []):
            if unwrap(unwrap(dl)["shardMetadata"])["modelCard"]["modelId"] == model_id:
                return next(iter(dl))
        return None

    def _advance(self, sup: Supervisor, body: dict, snap: dict, statuses: dict, rank: int, world: int,
                 card: dict) -> None:
        st = statuses[sup.runner_id]
        others = [s for r, s in statuses.items() if r != sup.runner_id]
        iid = body["instanceId"]
        if world > 1 and st == "RunnerIdle" and "connect" not in sup.sent:
            if rank < world - 1 or all(s not in (None, "RunnerIdle") for s in others):
                self._send(sup, "connect", "ConnectToGroup", iid)
            return
        nodes = list(body["shardAssignments"]["nodeToRunner"])
        all_dl = all(self._status_in(snap, n, card["model_id"]) == "DownloadCompleted" for n in nodes)
        ready_for_load = (("RunnerConnected", "RunnerLoading", "RunnerLoaded") if world > 1 else ("RunnerIdle",))
        if st == ready_for_load[0] and "load" not in sup.sent and all_dl \
                and all(s in ready_for_load for s in statuses.values()):
            found = find_model(card["model_id"], models_dirs(self.node.paths))
            default = default_models_dir(self.node.paths) / card["model_id"].replace("/", "--")
            path = str(found.path) if found else str(default)
            self._send(sup, "load", "LoadModel", iid, path)
            return
        loaded_ok = ("RunnerLoaded", "RunnerWarmingUp", "RunnerReady")
        if st == "RunnerLoaded" and "warmup" not in sup.sent and all(s in loaded_ok for s in statuses.values()):
            if rank > 0 or all(s in ("RunnerWarmingUp", "RunnerReady") for s in others):
                self._send(sup, "warmup", "StartWarmup", iid)

    def _send(self, sup: Supervisor, cmd: str, task: str, iid: str, *args: Any) -> None:
        sup.sent.add(cmd)
        logger.info(f"Worker plan: {task}", W_PLAN)
        self._task(task, iid)
        sup.command(cmd, *args)

    def _task(self, kind: str, iid: str) -> None:
        tid = new_uuid()
        self.cluster.publish({"type": "TaskCreated", "task": {kind: {"taskId": tid, "taskStatus": "Complete",
                                                                    "instanceId": iid}}})

    # ---- generation --------------------------------------------------------------------------------
    def generate(self, iid: str, params: dict[str, Any]) -> Iterator[tuple]:
        """Run one generation on this node's rank-0 runner of ``iid``; yields runner messages."""
        with self.cluster.cond:
            body = self.cluster.state.instance_bodies().get(iid)
        if body is None:
            yield ("gen_error", "Instance not found")
            return
        rid = body["shardAssignments"]["nodeToRunner"].get(self.node_id)
        sup = self.runners.get(rid or "")
        if sup is None or not sup.alive:
            yield ("gen_error", "Runner shutdown before completing command (runner not running)")
            return
        req_id = new_uuid()
        q: queue.Queue = queue.Queue()
        sup.streams[req_id] = q
        ready_body = {"prefillServerPort": None} if self.cfg.is_new else {}
        self.cluster.publish({"type": "RunnerStatus", "runnerId": rid, "status": {"RunnerRunning": {}}})
        sup.command("generate", req_id, params)
        try:
            while True:
                msg = q.get()
                yield msg
                if msg[0] in ("gen_done", "gen_error"):
                    return
        finally:
            sup.streams.pop(req_id, None)
            if sup.alive:
                self.cluster.publish({"type": "RunnerStatus", "runnerId": rid, "status": {"RunnerReady": ready_body}})

    def stop(self) -> None:
        self.stopped.set()
        with self.lock:
            sups, self.runners = list(self.runners.values()), {}
        for s in sups:
            s.stop()


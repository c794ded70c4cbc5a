"""The Worker: node info, downloads, topology probes and the runner plan.

Contract:
- publishes this node's identity/memory/disk/network (and NEW: backends) when started and after
  every master change; with ``--no-worker`` none of this runs (the node never appears in /state).
- every ``edge_probe_s`` probes ``GET http://<peer ip>:<own api port>/node_id`` and adds the
  directed edge (snake_case ``sinkMultiaddr``) only when the peer answers its own id.
- plans every ``worker_plan_s`` from the replicated state: CreateRunner, DownloadModel,
  ConnectToGroup (rank n-1 last), LoadModel (every node DownloadCompleted), StartWarmup (ranks > 0
  first); a failed runner is recreated with the same id after backoff; after 5 failures the
  instance is deleted (``Instance <iid> exceeded 5 retries, requesting deletion``).
"""

from __future__ import annotations

import copy
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .cards import card_json, card_toml
from .downloads import download_model
from .ids import new_uuid
from .logs import logger
from .models import find_model, normalize
from .paths import default_models_dir, models_dirs
from .state import unwrap, utc_stamp
from .supervisor import Supervisor

W_PLAN = "exo.worker.main:plan_step:225"
W_DL = "exo.worker.main:_download_model:247"
W_COORD = "exo.download.coordinator:_scan:214"
W_CARDS = "exo.worker.main:_reconcile_custom_cards:180"
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
        self.dl_sent: set[str] = set()
        self.cards_seen: set[str] = set()
        self.lock = threading.RLock()
        self.stopped = threading.Event()
        self.epoch = 0

    # ---- startup / reset -------------------------------------------------------------------------
    def start(self) -> None:
        if not any("macmon" in p for p in os.environ.get("PATH", "").split(":")):
            logger.warning("macmon not found, falling back to psutil...", "exo.utils.info_gatherer:_monitor:1")
        threading.Thread(target=self._plan_loop, name="worker-plan", daemon=True).start()
        threading.Thread(target=self._probe_loop, name="edge-probe", daemon=True).start()
        threading.Thread(target=self._card_loop, name="custom-cards", daemon=True).start()
        if not self.node.args.no_downloads:
            threading.Thread(target=self._scan_loop, name="download-scan", daemon=True).start()

    def reset(self) -> None:
        """Master changed: kill runners, forget local progress, republish node info."""
        with self.lock:
            self.epoch += 1
            sups, self.runners = list(self.runners.values()), {}
            self.failures.clear()
            self.retry_at.clear()
            self.deleting.clear()
            self.dl_sent.clear()
        for s in sups:
            s.stop()
        self.publish_info()
        with self.lock:
            self.cards_seen.clear()
        if self.node.args.no_downloads:
            return
        late = self.cfg.faults.late_rescan_s
        if late:  # fault: the rescan after an election comes late (real EXO on 2 nodes offline: 46-57 s)
            epoch = self.epoch
            threading.Timer(late, lambda: self.epoch == epoch and self.scan_downloads(force=True)).start()
        else:
            self.scan_downloads(force=True)

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

    # ---- downloads -------------------------------------------------------------------------------
    def _progress(self, kind: str, card: dict[str, Any], path: str, shard: dict[str, Any] | None = None,
                  **extra: Any) -> dict[str, Any]:
        """A download status; ``shard`` is the runner's own tagged shard (else the whole model, as the scan)."""
        if shard is None:
            shard = {"PipelineShardMetadata": {"modelCard": card_json(card, self.cfg.generation), "deviceRank": 0,
                                               "worldSize": 1, "immediateException": False, "shouldTimeout": None,
                                               "startLayer": 0, "endLayer": card["n_layers"],
                                               "nLayers": card["n_layers"]}}
        return {kind: {"nodeId": self.node_id, "shardMetadata": shard, "modelDirectory": path, **extra}}

    def _my_download(self, model_id: str) -> str | None:
        for dl in self.cluster.state.data["downloads"].get(self.node_id, []):
            if unwrap(unwrap(dl)["shardMetadata"])["modelCard"]["modelId"] == model_id:
                return next(iter(dl))
        return None

    def scan_downloads(self, force: bool = False) -> None:
        """DownloadCoordinator startup/periodic scan: DownloadCompleted for every complete card."""
        dirs = models_dirs(self.node.paths)
        for card in self.node.all_cards():
            found = find_model(card["model_id"], dirs)
            if found is None:
                continue
            with self.cluster.cond:
                have = self._my_download(card["model_id"])
            if have == "DownloadCompleted" and not force:
                continue
            logger.info(f"DownloadCoordinator: Model {card['model_id']} found at {found.path}", W_COORD)
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self._progress(
                "DownloadCompleted", card, str(found.path), total={"inBytes": card["storage_size"]["in_bytes"]},
                readOnly=found.read_only)})

    def _scan_loop(self) -> None:
        while not self.stopped.wait(self.cfg.timing.download_scan_s):
            self.scan_downloads()

    def _ensure_download(self, card: dict[str, Any], status: str | None, shard: dict[str, Any] | None = None) -> None:
        """DownloadModel task: worker-side check when a runner needs the model; a local model is
        reported DownloadCompleted with the runner's own shard (also over the scan's whole-model entry)."""
        if status in ("DownloadFailed", "DownloadPending") or card["model_id"] in self.dl_sent:
            return
        self.dl_sent.add(card["model_id"])
        found = find_model(card["model_id"], models_dirs(self.node.paths))
        target = str(default_models_dir(self.node.paths) / card["model_id"].replace("/", "--"))
        if found is not None:
            logger.info(f"Model {card['model_id']} found at {found.path}", W_DL)
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self._progress(
                "DownloadCompleted", card, str(found.path), shard, total={"inBytes": card["storage_size"]["in_bytes"]},
                readOnly=found.read_only)})
        elif status == "DownloadCompleted":
            return
        elif self.node.args.no_downloads:
            return  # no coordinator: StartDownload is never handled, runner stays Idle
        elif self.node.args.offline:
            logger.warning(f"Offline mode: model {card['model_id']} is not fully available locally, cannot download",
                           "exo.download.coordinator:_start_download:1")
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self._progress(
                "DownloadFailed", card, target,
                errorMessage=f"Model files not found locally in offline mode: {card['model_id']}")})
        else:
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self._progress(
                "DownloadPending", card, target, downloaded={"inBytes": 0}, total={"inBytes": 0})})
            endpoint = os.environ.get("HF_ENDPOINT") or self.cfg.hf_endpoint or "https://huggingface.co"
            threading.Thread(target=self._download, args=(card, target, endpoint), daemon=True).start()

    def _download(self, card: dict[str, Any], target: str, endpoint: str) -> None:
        """StartDownload on this node: Ongoing progress, then Completed or Failed (online only)."""
        started = time.monotonic()
        last = [0.0]

        def progress(done: int, total: int, files_done: int, files: int) -> None:
            now = time.monotonic()
            if now - last[0] < 0.5 and files_done < files:
                return
            last[0] = now
            speed = done / max(now - started, 1e-6)
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self._progress(
                "DownloadOngoing", card, target, downloadProgress={
                    "total": {"inBytes": total}, "downloaded": {"inBytes": done},
                    "downloadedThisSession": {"inBytes": done}, "completedFiles": files_done, "totalFiles": files,
                    "speed": speed, "etaMs": int((total - done) / speed * 1000) if speed > 0 else 0, "files": {}})})

        try:
            download_model(endpoint, card["model_id"], Path(target), progress)
        except RuntimeError as exc:
            logger.error(f"Download failed for {card['model_id']}: {exc}", "exo.download.coordinator:_download:1")
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self._progress(
                "DownloadFailed", card, target, errorMessage=str(exc))})
            return
        self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self._progress(
            "DownloadCompleted", card, target, total={"inBytes": card["storage_size"]["in_bytes"]}, readOnly=False)})

    # ---- custom cards ------------------------------------------------------------------------------
    def _card_loop(self) -> None:
        while not self.stopped.wait(self.cfg.timing.card_reconcile_s):
            try:
                self.reconcile_cards()
            except OSError as exc:
                logger.warning(f"custom card reconcile failed: {exc}", W_CARDS)

    def reconcile_cards(self) -> None:
        """``Worker._reconcile_custom_cards``: every card added to the cluster is saved to this node's
        custom cards dir (OLD: and loaded, the dir is where v1.0.71 keeps them); NEW deletes any TOML
        there that the cluster state does not hold. A newly seen card triggers a download rescan."""
        synced = {c["model_id"]: c for c in self.node.synced_cards()}
        cards_dir = self.node.paths.custom_cards_dir
        fresh = []
        for mid, card in synced.items():
            path = cards_dir / f"{normalize(mid)}.toml"
            if not path.exists():
                cards_dir.mkdir(parents=True, exist_ok=True)
                path.write_text(card_toml(card), encoding="utf-8")
            if not self.cfg.is_new and all(c["model_id"] != mid for c in self.node.custom_cards):
                self.node.custom_cards.append(card)
            with self.lock:
                if mid not in self.cards_seen:
                    self.cards_seen.add(mid)
                    fresh.append(mid)
        if self.cfg.is_new and cards_dir.is_dir():
            for path in sorted(cards_dir.glob("*.toml")):
                if path.stem not in {normalize(m) for m in synced}:
                    path.unlink(missing_ok=True)
                    logger.debug(f"Removed custom card {path.name}: not in the cluster state", W_CARDS)
        if fresh and not self.node.args.no_downloads:
            self.scan_downloads()

    # ---- topology probes -------------------------------------------------------------------------
    def _probe_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                self._probe_once()
            except Exception as exc:  # noqa: BLE001
                logger.debug(f"probe round failed: {exc}", "exo.worker.main:_poll_connection_updates:1")
            self.stopped.wait(self.cfg.timing.edge_probe_s)

    def _probe_once(self) -> None:
        port = self.node.args.api_port
        with self.cluster.cond:
            data = self.cluster.state.data
            nodes = [n for n in data["topology"]["nodes"] if n != self.node_id]
            nets = {n: copy.deepcopy(data["nodeNetwork"].get(n)) for n in nodes}
            mine = copy.deepcopy(data["topology"]["connections"].get(self.node_id, {}))
        if self.node_id not in self.cluster.state.data["topology"]["nodes"]:
            return
        for nid in nodes:
            for iface in (nets.get(nid) or {}).get("interfaces", []):
                ip = iface["ipAddress"]
                if ":" in ip:
                    continue
                edge = {"sinkMultiaddr": {"address": f"/ip4/{ip}/tcp/{port}", "address_type": "ip4",
                                          "ip_address": ip, "port": port}}
                ok = _probe(ip, port, self.cfg.node_address) == nid
                present = edge in mine.get(nid, [])
                if ok and not present:
                    self.cluster.publish({"type": "EdgeCreated", "source": self.node_id, "sink": nid, "edge": edge})
                elif not ok and present:
                    self.cluster.publish({"type": "EdgeDeleted", "source": self.node_id, "sink": nid, "edge": edge})

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
        self._ensure_download(card, self._status_in(snap, self.node_id, card["model_id"]), sa["runnerToShard"][rid])
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


def _probe(ip: str, port: int, source: str) -> str | None:
    """One /node_id probe; None on any failure (silent, as in exo)."""
    import http.client

    for _ in range(3):
        try:
            conn = http.client.HTTPConnection(ip, port, timeout=5, source_address=(source, 0))
            conn.request("GET", "/node_id")
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if resp.status != 200:
                return None
            val = json.loads(data)
            return val if isinstance(val, str) else None
        except (OSError, ValueError):
            time.sleep(0.2)
            continue
    return None


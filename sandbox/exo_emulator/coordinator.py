"""The node's DownloadCoordinator: which models it has, the DownloadModel task, online downloads.

Contract: ``scan`` publishes ``DownloadCompleted`` for every card whose model is complete in one of the
node's models dirs (startup, periodic, and forced after a master change); ``ensure`` answers a runner's
DownloadModel task once per model: complete locally (with the runner's own shard), nothing more to do,
``DownloadFailed`` offline, or ``DownloadPending`` then an online download with ``DownloadOngoing``
progress and ``DownloadCompleted`` / ``DownloadFailed``. ``progress`` builds one download status.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from .cards import card_json
from .downloads import download_model
from .logs import logger
from .models import find_model
from .paths import default_models_dir, models_dirs
from .state import unwrap

W_DL = "exo.worker.main:_download_model:247"
W_COORD = "exo.download.coordinator:_scan:214"


class DownloadCoordinator:
    """Download statuses of one node (``node``: its config, cluster, paths, args and cards)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.cfg, self.cluster, self.node_id = node.cfg, node.cluster, node.node_id
        self.sent: set[str] = set()  # models whose DownloadModel task was answered since the last reset

    def progress(self, kind: str, card: dict[str, Any], path: str, shard: dict[str, Any] | None = None,
                  **extra: Any) -> dict[str, Any]:
        """A download status; ``shard`` is the runner's own tagged shard (else the whole model, as the scan)."""
        if shard is None:
            shard = {"PipelineShardMetadata": {"modelCard": card_json(card, self.cfg.generation), "deviceRank": 0,
                                               "worldSize": 1, "immediateException": False, "shouldTimeout": None,
                                               "startLayer": 0, "endLayer": card["n_layers"],
                                               "nLayers": card["n_layers"]}}
        return {kind: {"nodeId": self.node_id, "shardMetadata": shard, "modelDirectory": path, **extra}}

    def _mine(self, model_id: str) -> str | None:
        for dl in self.cluster.state.data["downloads"].get(self.node_id, []):
            if unwrap(unwrap(dl)["shardMetadata"])["modelCard"]["modelId"] == model_id:
                return next(iter(dl))
        return None

    def scan(self, force: bool = False) -> None:
        """DownloadCoordinator startup/periodic scan: DownloadCompleted for every complete card."""
        dirs = models_dirs(self.node.paths)
        for card in self.node.all_cards():
            found = find_model(card["model_id"], dirs)
            if found is None:
                continue
            with self.cluster.cond:
                have = self._mine(card["model_id"])
            if have == "DownloadCompleted" and not force:
                continue
            logger.info(f"DownloadCoordinator: Model {card['model_id']} found at {found.path}", W_COORD)
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self.progress(
                "DownloadCompleted", card, str(found.path), total={"inBytes": card["storage_size"]["in_bytes"]},
                readOnly=found.read_only)})

    def run_scans(self, stopped: threading.Event) -> None:
        """The periodic scan, every ``download_scan_s`` until ``stopped``."""
        while not stopped.wait(self.cfg.timing.download_scan_s):
            self.scan()

    def ensure(self, card: dict[str, Any], status: str | None, shard: dict[str, Any] | None = None) -> None:
        """DownloadModel task: worker-side check when a runner needs the model; a local model is
        reported DownloadCompleted with the runner's own shard (also over the scan's whole-model entry)."""
        if status in ("DownloadFailed", "DownloadPending") or card["model_id"] in self.sent:
            return
        self.sent.add(card["model_id"])
        found = find_model(card["model_id"], models_dirs(self.node.paths))
        target = str(default_models_dir(self.node.paths) / card["model_id"].replace("/", "--"))
        if found is not None:
            logger.info(f"Model {card['model_id']} found at {found.path}", W_DL)
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self.progress(
                "DownloadCompleted", card, str(found.path), shard, total={"inBytes": card["storage_size"]["in_bytes"]},
                readOnly=found.read_only)})
        elif status == "DownloadCompleted":
            return
        elif self.node.args.no_downloads:
            return  # no coordinator: StartDownload is never handled, runner stays Idle
        elif self.node.args.offline:
            logger.warning(f"Offline mode: model {card['model_id']} is not fully available locally, cannot download",
                           "exo.download.coordinator:_start_download:1")
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self.progress(
                "DownloadFailed", card, target,
                errorMessage=f"Model files not found locally in offline mode: {card['model_id']}")})
        else:
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self.progress(
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
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self.progress(
                "DownloadOngoing", card, target, downloadProgress={
                    "total": {"inBytes": total}, "downloaded": {"inBytes": done},
                    "downloadedThisSession": {"inBytes": done}, "completedFiles": files_done, "totalFiles": files,
                    "speed": speed, "etaMs": int((total - done) / speed * 1000) if speed > 0 else 0, "files": {}})})

        try:
            download_model(endpoint, card["model_id"], Path(target), progress)
        except RuntimeError as exc:
            logger.error(f"Download failed for {card['model_id']}: {exc}", "exo.download.coordinator:_download:1")
            self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self.progress(
                "DownloadFailed", card, target, errorMessage=str(exc))})
            return
        self.cluster.publish({"type": "Download", "nodeId": self.node_id, "progress": self.progress(
            "DownloadCompleted", card, target, total={"inBytes": card["storage_size"]["in_bytes"]}, readOnly=False)})

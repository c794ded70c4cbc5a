"""One emulated exo node: cluster + worker + API wired together.

Contract: ``Node.start()`` binds the cluster link, discovery and (unless ``--no-api``) the API
on ``node_address``; it raises ``OSError`` when a port is taken. The API answers from this node's
replicated state; commands wait for the election ("API paused") and then go to the master;
chat goes to the instance's rank-0 node (locally or over the cluster link).
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .api import ApiServer
from .cards import builtin_cards, card_from_local, load_custom_cards, uncamel_card
from .cluster import Cluster
from .config import EmulatorConfig
from .discovery import Discovery, namespace_hash
from .ids import new_node_id
from .logs import logger
from .models import find_model
from .paths import ExoPaths, models_dirs
from .state import unwrap
from .wire import JsonConn
from .worker import READYISH, Worker

MDNS_PORT = 5353  # OLD: libp2p mDNS
MDNS_FALLBACK_PORT = 15353  # unprivileged users cannot bind 5353


EXO_EVENT_NAMES = {"NodeInfo": "NodeGatheredInfo", "LastSeen": "NodeGatheredInfo",
                   "RunnerStatus": "RunnerStatusUpdated",
                   "Download": "NodeDownloadProgress", "EdgeCreated": "TopologyEdgeCreated",
                   "EdgeDeleted": "TopologyEdgeDeleted", "TaskStatus": "TaskStatusUpdated",
                   "CustomCard": "CustomModelCardAdded"}


def _exo_event(e: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in e.items() if k != "type"}
    if e["type"] == "RunnerDeleted":
        return {"RunnerStatusUpdated": {"runnerId": e["runnerId"], "runnerStatus": {"RunnerShutdown": {}}}}
    return {EXO_EVENT_NAMES.get(e["type"], e["type"]): body}


class BindError(Exception):
    """A listening socket could not be bound (port taken)."""

    def __init__(self, port: int, exc: OSError) -> None:
        super().__init__(str(exc))
        self.port, self.errno = port, exc.errno


class Node:
    def __init__(self, cfg: EmulatorConfig, args: Any, paths: ExoPaths, namespace: str) -> None:
        self.cfg, self.args, self.paths, self.namespace = cfg, args, paths, namespace
        self.node_id = new_node_id(cfg.generation)
        self.stopped = threading.Event()
        self.unpaused = threading.Event()
        self.pythonpath = str(Path(__file__).resolve().parent.parent)
        self.inflight: Counter[str] = Counter()
        self.custom_cards = load_custom_cards(paths.custom_cards_dir)
        self.cluster: Cluster | None = None
        self.worker: Worker | None = None
        self.api: ApiServer | None = None
        self.discovery: Discovery | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind every socket (cluster link, discovery, API); raises BindError if one is taken."""
        a, cfg = self.args, self.cfg
        link_port = a.zenoh_port if cfg.is_new else a.libp2p_port
        try:
            self.cluster = Cluster(self.node_id, cfg.node_address, link_port, a.api_port if a.spawn_api else None,
                                   cfg.generation, a.force_master, cfg.timing, cfg.faults.isolated)
        except OSError as exc:
            raise BindError(link_port, exc) from None
        self.cluster.chat_handler = self._serve_remote_chat
        if not cfg.faults.isolated:
            ports = [a.discovery_port] if cfg.is_new else [MDNS_PORT, MDNS_FALLBACK_PORT]
            port = ports[0]
            try:
                self.discovery = Discovery(cfg.node_address, ports, list(cfg.peer_addresses),
                                           namespace_hash(cfg.generation, self.namespace), cfg.generation,
                                           cfg.timing.hello_s, self.cluster.hello, self.cluster.on_hello)
            except OSError as exc:
                raise BindError(port, exc) from None
        if a.spawn_api:
            try:
                self.api = ApiServer(self, cfg.node_address, a.api_port)
            except OSError as exc:
                raise BindError(a.api_port, exc) from None

    def start(self) -> None:
        assert self.cluster is not None
        if not self.args.no_worker:
            self.worker = Worker(self)
            self.cluster.on_master_change.append(self.worker.reset)
        self.cluster.on_master_change.append(self._unpause)
        if self.api is not None:
            threading.Thread(target=self.api.serve_forever, name="api", daemon=True).start()
        self.cluster.start()
        if self.discovery is not None:
            self.discovery.start()
        if self.worker is not None:
            self.worker.start()

    def _unpause(self) -> None:
        if self.api is not None:
            logger.info("Unpausing API", "exo.api.main:unpause:313")
        self.unpaused.set()

    def stop(self) -> None:
        self.stopped.set()
        if self.worker is not None:
            self.worker.stop()
        if self.discovery is not None:
            self.discovery.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if self.api is not None:
            self.api.shutdown()
            self.api.server_close()

    # ---- cards -----------------------------------------------------------------------------------
    def local_custom_cards(self) -> list[dict[str, Any]]:
        return list(self.custom_cards)

    def synced_cards(self) -> list[dict[str, Any]]:
        """Cards added through ``POST /models/add`` (the cluster's ``CustomModelCardAdded`` events)."""
        if self.cluster is None:
            return []
        with self.cluster.cond:
            synced = list(self.cluster.state.data["customModelCards"].values())
        out = []
        for raw in synced:
            card = uncamel_card(raw)
            card["is_custom"] = True
            out.append(card)
        return out

    def all_cards(self) -> list[dict[str, Any]]:
        """Built-in cards, then NEW: the cluster state's custom cards (a TOML file alone does not count:
        the worker deletes it); OLD: the custom cards dir (the worker saves added cards there)."""
        cards = {c["model_id"]: c for c in builtin_cards()}
        extra = self.synced_cards() if self.cfg.is_new else list(self.custom_cards)
        for c in extra:
            cards.setdefault(c["model_id"], c)
        return list(cards.values())

    def find_card(self, model_id: str) -> dict[str, Any] | None:
        return next((c for c in self.all_cards() if c["model_id"] == model_id), None)

    def card_or_local(self, model_id: str) -> dict[str, Any] | None:
        """``ModelCard.load``: a known card, else one built from the local files (never stored), else None."""
        card = self.find_card(model_id)
        if card is not None:
            return card
        found = find_model(model_id, models_dirs(self.paths))
        if found is None:
            return None
        try:
            return card_from_local(model_id, found.path)
        except ValueError:
            return None

    @staticmethod
    def card_from_shard(shard: dict[str, Any]) -> dict[str, Any]:
        return uncamel_card(shard["modelCard"])

    # ---- state views -----------------------------------------------------------------------------
    def state_data(self) -> dict[str, Any]:
        assert self.cluster is not None
        with self.cluster.cond:
            return copy.deepcopy(self.cluster.state.data)

    def api_state(self) -> dict[str, Any]:
        """/state as this node's API serves it (``state_runner_lag`` fault applied here)."""
        assert self.cluster is not None
        with self.cluster.cond:
            out = self.cluster.state.to_json(self.cfg.generation)
        lag = self.cfg.faults.state_runner_lag
        if lag is not None:
            out = self._lagged(out, lag)
        return out

    _lag_snapshot: tuple[float, dict[str, Any]] | None = None

    def _lagged(self, out: dict[str, Any], lag: float) -> dict[str, Any]:
        import time

        for inst in out["instances"].values():
            unwrap(inst)["shardAssignments"]["nodeToRunner"] = {}
        now = time.monotonic()
        if self._lag_snapshot is None:
            self._lag_snapshot = (now, {})
        elif now - self._lag_snapshot[0] >= lag:
            self._lag_snapshot = (now, copy.deepcopy(out["runners"]))
        out["runners"] = copy.deepcopy(self._lag_snapshot[1])
        return out

    def cluster_events(self) -> list[dict[str, Any]]:
        """``GET /events``: every applied event, tagged with exo's event class names."""
        assert self.cluster is not None
        with self.cluster.cond:
            applied = copy.deepcopy(self.cluster.applied)
        return [_exo_event(e) for e in applied]

    def downloaded_model_ids(self) -> set[str]:
        done: set[str] = set()
        for entries in self.state_data()["downloads"].values():
            for dl in entries:
                if "DownloadCompleted" in dl:
                    done.add(unwrap(unwrap(dl)["shardMetadata"])["modelCard"]["modelId"])
        return done

    def instance_for_model(self, model_id: str) -> dict[str, Any] | None:
        """The instance serving ``model_id`` with the fewest in-flight requests."""
        matches = [inst for inst in self.state_data()["instances"].values()
                   if unwrap(inst)["shardAssignments"]["modelId"] == model_id]
        if not matches:
            return None
        return min(matches, key=lambda i: self.inflight[unwrap(i)["instanceId"]])

    def send_command(self, cmd: dict[str, Any]) -> None:
        """Commands block while the API is paused (election in progress)."""
        assert self.cluster is not None
        self.unpaused.wait()
        self.cluster.command(cmd)

    # ---- chat ------------------------------------------------------------------------------------
    def chat_events(self, req: Any) -> Iterator[tuple]:
        """Wait for the instance's runners (no timeout, as exo), then stream the generation."""
        assert self.cluster is not None
        inst = self.instance_for_model(req.model)
        if inst is None:
            yield ("instance_gone",)
            return
        iid = unwrap(inst)["instanceId"]
        self.inflight[iid] += 1
        try:
            body = yield from self._wait_ready(iid)
            if body is None:
                yield ("instance_gone",)
                return
            rank0 = next(nid for nid, rid in body["shardAssignments"]["nodeToRunner"].items()
                         if unwrap(body["shardAssignments"]["runnerToShard"][rid])["deviceRank"] == 0)
            if rank0 == self.node_id and self.worker is not None:
                yield from self.worker.generate(iid, req.params())
            else:
                yield from self._remote_generate(rank0, iid, req.params())
        finally:
            self.inflight[iid] -= 1

    def _wait_ready(self, iid: str) -> Iterator[tuple]:
        assert self.cluster is not None
        while not self.stopped.is_set():
            with self.cluster.cond:
                body = self.cluster.state.instance_bodies().get(iid)
                if body is None:
                    return None
                runners = self.cluster.state.data["runners"]
                rids = list(body["shardAssignments"]["runnerToShard"])
                if all(r in runners and next(iter(runners[r])) in READYISH for r in rids):
                    return copy.deepcopy(body)
                self.cluster.cond.wait(0.5)
            yield ("wait",)
        return None

    def _remote_generate(self, nid: str, iid: str, params: dict[str, Any]) -> Iterator[tuple]:
        assert self.cluster is not None
        peer = self.cluster.peers.get(nid)
        if peer is None:
            yield ("gen_error", f"Node {nid} unreachable")
            return
        try:
            conn = JsonConn.connect(peer["src"], int(peer["link_port"]), source=self.cfg.node_address)
        except OSError as exc:
            yield ("gen_error", f"Node {nid} unreachable: {exc}")
            return
        try:
            conn.send({"type": "chat", "instanceId": iid, "params": params})
            while True:
                msg = conn.recv()
                if msg is None:
                    yield ("gen_error", "Runner shutdown before completing command (connection lost)")
                    return
                item = tuple(msg["m"])
                yield item
                if item[0] in ("gen_done", "gen_error"):
                    return
        finally:
            conn.close()

    def _serve_remote_chat(self, first: dict[str, Any], conn: JsonConn) -> None:
        if self.worker is None:
            conn.send({"m": ["gen_error", "no worker on this node"]})
            return
        for item in self.worker.generate(first["instanceId"], first["params"]):
            if not conn.send({"m": list(item)}):
                return



"""RunFacts: the exo session of a node is the node id its API answers now plus the identity of the exo
process from its launch record; a dead API, or a restarted process behind a persistent node id, never matches."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

from modeldrop.exo.launcher import LaunchRecord
from modeldrop.facts import RunFacts


class _NodeId(BaseHTTPRequestHandler):
    node_id = "3f2a9c1b7d4e5f60718293a4b5c6d7e8"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps(self.node_id).encode()
        self.send_response(200 if self.path == "/node_id" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Node:
    """A node whose `procs` probe reports the processes in `live` ({pid: start})."""

    def __init__(self) -> None:
        self.live: dict[int, float] = {}

    def address(self) -> str:
        return "127.0.0.1"

    def facts(self, timeout: float = 60) -> dict:
        return {"hostname": "mac1", "boot_id": "boot-1"}

    def run_probe(self, name: str, args: dict, timeout: float = 60) -> dict:
        assert name == "procs"
        return {"procs": [{"pid": p, "start": self.live[p], "cmdline": ["exo"]} for p in args["pids"]
                          if p in self.live]}


def _facts(port: int, report_dir: Path | str = "/nonexistent", node: _Node | None = None) -> RunFacts:
    node = node or _Node()
    pool = SimpleNamespace(get=lambda k: node)
    cfg = SimpleNamespace(api_port=port, report_dir=Path(report_dir), node=lambda k: SimpleNamespace(target=f"u@h{k}"))
    return RunFacts(cfg, pool)


def _record(report_dir: Path, run: str, pid: int, start: float) -> None:
    rec = LaunchRecord(node=1, role="cluster", pid=pid, start=start, exe="/x/exo", argv=["/x/exo", "-v"], env={},
                       unset_env=[], generation="new", namespace="ns", api_url="http://127.0.0.1:1", log_path="l",
                       exo_log_path="e", runner_log_path="r", started_at=time.time(), node_target="u@h1",
                       node_host="mac1", node_boot="boot-1")
    (report_dir / run / "exo").mkdir(parents=True)
    (report_dir / run / "exo" / "node1-cluster.json").write_text(json.dumps(rec.to_json()))


def _serve():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NodeId)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_exo_session_is_the_answering_node_id_and_unreachable_never_matches():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NodeId)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    facts = _facts(port)
    try:
        assert facts.exo_session(1).split("|")[0] == _NodeId.node_id
        _NodeId.node_id = "1c0f0000000000000000000000005678"  # exo restarted: a new id
        assert facts.exo_session(1).split("|")[0] == "1c0f0000000000000000000000005678"
    finally:
        server.shutdown()
        server.server_close()
    first, second = facts.exo_session(1), facts.exo_session(1)
    assert first.startswith("unreachable:") and first != second


def test_a_restarted_exo_behind_a_persistent_node_id_is_another_session(tmp_path):
    server = _serve()
    node = _Node()
    facts = _facts(server.server_address[1], tmp_path, node)
    try:
        _record(tmp_path, "20260101T000000Z-org--m", pid=4242, start=1000.0)
        node.live = {4242: 1000.0}
        at_pass = facts.exo_session(1)
        assert "pid 4242 start 1000.00" in at_pass and facts.exo_session(1) == at_pass  # same process: same
        node.live = {}  # exo died and was started again by hand: same node id, no launch record of it
        gone = facts.exo_session(1)
        assert gone.split("|")[0] == at_pass.split("|")[0] and gone != at_pass
        assert "no-live-launch-record" in gone and gone != facts.exo_session(1)
        node.live = {4242: 2000.0}  # the pid reused by another process: its start time differs
        assert "no-live-launch-record" in facts.exo_session(1)
        _record(tmp_path, "20260102T000000Z-org--m", pid=5151, start=3000.0)  # a later run restarted it
        node.live = {5151: 3000.0}
        assert "pid 5151" in facts.exo_session(1) and facts.exo_session(1) != at_pass
    finally:
        server.shutdown()
        server.server_close()

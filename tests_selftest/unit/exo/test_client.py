"""ExoClient against a tiny local HTTP server that answers like the contract (§2)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from modeldrop.exo import state as st
from modeldrop.exo.client import ExoClient, ExoHTTPError, ExoUnreachable
from modeldrop.exo.observe import canary_check
from tests_selftest.support.exo_samples import IID, MODEL, NEW_STATE, RING_INSTANCE, A

SEEN: list = []
CARDS: set = set()  # model ids the fake EXO has a card for (the unfiltered /v1/models)
UNADDABLE = "nobody/not-local"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        SEEN.append(("GET", u.path, q))
        if u.path == "/node_id":
            return self._send(200, A)
        if u.path == "/state":
            return self._send(200, NEW_STATE)
        if u.path == "/v1/models":
            data = [{"id": m, "object": "model"} for m in sorted(CARDS)]
            if q.get("status") == ["downloaded"]:
                data = [{"id": MODEL, "object": "model"}] if MODEL in CARDS else []
            return self._send(200, {"object": "list", "data": data})
        if u.path == "/instance/placement":
            if q.get("instance_meta") == ["MlxJaccl"]:
                return self._send(400, {"error": {"message": "Requested RDMA (MlxJaccl) but no RDMA-connected cycles "
                                                             "available", "type": "Bad Request", "param": None, "code": 400}})
            return self._send(200, RING_INSTANCE)
        if u.path.startswith("/instance/"):
            return self._send(404, {"error": {"message": "Instance not found", "type": "Not Found", "code": 404}})
        self._send(404, {"detail": "Not Found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(n))
        SEEN.append(("POST", self.path, body))
        if self.path == "/models/add":  # EXO reads the local model dir; UNADDABLE has none
            if body.get("model_id") == UNADDABLE:
                return self._send(400, {"error": {"message": f"Failed to fetch model: no config.json for {UNADDABLE}",
                                                  "type": "Bad Request", "param": None, "code": 400}})
            CARDS.add(body["model_id"])
            return self._send(200, {"id": body["model_id"], "object": "model", "is_custom": True})
        self._send(200, {"message": "Command received.", "command_id": "c1", "model_card": {}})


@pytest.fixture(scope="module")
def api():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield ExoClient(f"http://127.0.0.1:{srv.server_address[1]}", timeout_s=3)
    srv.shutdown()


def test_node_id_is_a_bare_string(api):
    assert api.node_id() == A


def test_state_and_models(api):
    CARDS.clear()
    assert st.cluster_view(api.state()).members
    assert api.models() == [] and api.downloaded_model_ids() == [] and not api.has_card(MODEL)
    assert api.add_model(MODEL)["id"] == MODEL and api.has_card(MODEL)
    assert api.downloaded_model_ids() == [MODEL]
    assert SEEN[-3][:2] == ("POST", "/models/add") and SEEN[-3][2] == {"model_id": MODEL}
    with pytest.raises(ExoHTTPError) as e:
        api.add_model(UNADDABLE)
    assert e.value.status == 400 and "Failed to fetch model" in e.value.message


def test_placement_params_and_error_body(api):
    inst = api.placement(MODEL, "Pipeline", "MlxRing", 2)
    assert st.parse_instance(inst).instance_id == IID
    assert SEEN[-1][2] == {"model_id": [MODEL], "sharding": ["Pipeline"], "instance_meta": ["MlxRing"], "min_nodes": ["2"]}
    with pytest.raises(ExoHTTPError) as ei:
        api.placement(MODEL, "Tensor", "MlxJaccl", 2)
    assert ei.value.status == 400 and ei.value.message.startswith("Requested RDMA (MlxJaccl)")


def test_create_instance_wraps_body(api):
    api.create_instance(RING_INSTANCE)
    assert SEEN[-1] == ("POST", "/instance", {"instance": RING_INSTANCE})


def test_get_missing_instance_is_none(api):
    assert api.get_instance("nope") is None


def test_unreachable():
    with pytest.raises(ExoUnreachable):
        ExoClient("http://127.0.0.1:9", timeout_s=1).node_id()


class AliveLauncher:
    def proc(self):
        return {"pid": 1, "start": 1.0}


def test_canary_check_passes_and_flags_dir_drift(api):
    CARDS.clear()  # a model that just dropped: EXO has no card, the canary adds it
    v = canary_check(AliveLauncher(), api, MODEL, "/Users/me/.exo/models/mlx-community--Llama-3.2-1B-Instruct-4bit",
                     api_timeout_s=5, model_timeout_s=5)
    assert v.ok and v.facts["card_added"] and v.details["card"]["card"] == "added", v.summary
    assert "POST /models/add" in v.summary and MODEL in CARDS
    v = canary_check(AliveLauncher(), api, MODEL, "/Users/me/.exo/models/mlx-community--Llama-3.2-1B-Instruct-4bit",
                     api_timeout_s=5, model_timeout_s=5)
    assert v.ok and not v.facts["card_added"] and v.details["card"]["card"] == "present"
    v = canary_check(AliveLauncher(), api, MODEL, "/Users/me/Models/mlx-community--Llama-3.2-1B-Instruct-4bit",
                     api_timeout_s=5, model_timeout_s=5)
    assert not v.ok and v.facts["dir_drift"] and "not at the audited" in v.summary


def test_canary_no_card_is_its_own_diagnosis(api):
    """POST /models/add fails: 'EXO has no model card', with the command that adds it; never dir drift (D6)."""
    from modeldrop import signatures as sg
    now = [0.0]
    v = canary_check(AliveLauncher(), api, UNADDABLE, "/x/models/nobody--not-local", api_timeout_s=5,
                     model_timeout_s=5, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert not v.ok and v.facts["no_card"] and "EXO has no model card for nobody/not-local" in v.summary
    assert "/models/add" in v.facts["add_command"] and '"model_id": "nobody/not-local"' in v.facts["add_command"]
    assert [m.id for m in sg.match("node1_canary", facts=v.facts)] == ["X-NO-CARD"]


def test_canary_unreadable_models_is_not_a_missing_card():
    """GET /v1/models failing says so; it is never 'EXO has no model card' (no POST /models/add is tried)."""
    from modeldrop import signatures as sg

    class ModelsDown:
        base_url = "http://10.0.0.1:52415"
        added = False

        def node_id(self, timeout_s=None):
            return A

        def has_card(self, model_id):
            raise ExoUnreachable("GET /v1/models: ReadTimeout")

        def add_model(self, model_id):
            self.added = True

    c = ModelsDown()
    v = canary_check(AliveLauncher(), c, MODEL, "/x", api_timeout_s=5, model_timeout_s=5)
    assert not v.ok and v.facts == {"models_unreadable": True} and "ReadTimeout" in v.summary and not c.added
    assert "X-NO-CARD" not in [m.id for m in sg.match("node1_canary", facts=v.facts)]


def test_canary_not_listed_with_a_card_is_dir_drift():
    """A card and still not listed as downloaded: the model dir is where D6 points."""
    from modeldrop import signatures as sg

    class CardButNoDownload:
        base_url = "http://10.0.0.1:52415"

        def node_id(self, timeout_s=None):
            return A

        def has_card(self, model_id):
            return True

        def downloaded_model_ids(self):
            return []

        def state(self):
            return {}

    now = [0.0]
    v = canary_check(AliveLauncher(), CardButNoDownload(), MODEL, "/x", api_timeout_s=5, model_timeout_s=10,
                     clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert not v.ok and v.facts["not_listed"] and v.facts["has_card"] and "has a card" in v.summary
    assert "D6" in [m.id for m in sg.match("node1_canary", facts=v.facts)]


def test_canary_sees_exo_exit_while_its_api_is_down():
    """exo answered /node_id, then died: the canary says it exited (fast), not 'not listed' at the deadline."""
    class DyingLauncher:
        calls = 0

        def proc(self):
            self.calls += 1
            return {"pid": 1, "start": 1.0} if self.calls == 1 else None

    class DeadAfterNodeId:
        base_url = "http://10.0.0.1:52415"

        def node_id(self, timeout_s=None):
            return A

        def has_card(self, model_id):
            return True

        def downloaded_model_ids(self):
            raise ExoUnreachable("GET /v1/models: ConnectionError")

        def state(self):
            raise ExoUnreachable("GET /state: ConnectionError")

    now = [0.0]

    def sleep(s):
        now[0] += s

    v = canary_check(DyingLauncher(), DeadAfterNodeId(), MODEL, "/Users/me/Models/x", api_timeout_s=5,
                     model_timeout_s=120, clock=lambda: now[0], sleep=sleep)
    assert not v.ok and "exo exited" in v.summary and now[0] < 5, (v.summary, now[0])

"""`--exo-api`: URLs validated before use, the serving check (one real chat through each URL) and its one-line
refusals, and `pytest benchmarks/ --exo-api` end to end against the calibration server (no bootstrap, no pass
cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modeldrop import config
from modeldrop.errors import InputError
from modeldrop.exo import serving_check as serving
from modeldrop.validate import api_urls
from sandbox.calibration_server import CalibServer
from tests_selftest.support import REPO


@pytest.fixture(scope="module")
def server() -> Iterator[CalibServer]:
    srv = CalibServer.start(defaults={"ttft_ms": 2, "gap_ms": 1})
    yield srv
    srv.stop()


class _NotExo(BaseHTTPRequestHandler):
    """An HTTP server that is not EXO: a web page at /, FastAPI's 404 elsewhere (as an OpenAI server has)."""

    def log_message(self, *a: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        status, ctype, body = ((200, "text/html", b"<html>hello</html>") if self.path == "/node_id" and
                               self.server.html else (404, "application/json", b'{"detail":"Not Found"}'))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(params=[False, True], ids=["404", "html"])
def not_exo(request: pytest.FixtureRequest) -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _NotExo)
    srv.html = request.param
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_urls_are_validated_and_normalised() -> None:
    assert api_urls("10.0.0.2, https://studio2.local:8443/ ,[::1]:9", "--exo-api", 52415) == (
        "http://10.0.0.2:52415", "https://studio2.local:8443", "http://[::1]:9")
    for bad in ("ftp://a", "http://a/v1", "http://u:p@a:1", "a:99999", "a:x", "http://a?x=1", "a b", "", ",",
                "http://a:1,a:1"):
        with pytest.raises(InputError, match=r"^--exo-api: ") as e:
            api_urls(bad, "--exo-api", 52415)
        assert "\n" not in str(e.value)


def test_exo_api_needs_no_nodes(tmp_path: Path) -> None:
    env = {"PROFILE_PATH": str(tmp_path / "none.json")}
    cfg = config.load_config({"MODEL_ID": "a/b", "EXO_API_URLS": "h1,h2:1234"}, environ=env)
    assert cfg.exo_api_urls == ("http://h1:52415", "http://h2:1234") and cfg.nodes == ()
    with pytest.raises(InputError, match="no nodes configured"):
        config.load_config({"MODEL_ID": "a/b"}, environ=env)
    file = tmp_path / "model_drop.env"
    file.write_text("MODEL_ID=a/b\nEXO_API_URLS=http://x/y\n")
    with pytest.raises(InputError, match=r"model_drop.env:2 \(EXO_API_URLS\): invalid EXO API URL 'http://x/y'"):
        config.load_config({}, environ=env, env_file=file)


def test_serving_check_answers(server: CalibServer) -> None:
    checks = serving.check_serving([server.url], server.model, chat_timeout_s=10)
    assert [(c.url, c.node_id, c.model_id, c.completion_tokens) for c in checks] == [
        (server.url, "calib-node", server.model, 8)]
    assert checks[0].answer and checks[0].e2e_s is not None
    fp = serving.fingerprint(checks, server.model)
    assert fp.startswith("exo-api-") and fp != serving.fingerprint(checks, "other/model")
    assert server.url in serving.describe(checks)


def _refusal(urls: list[str], model: str) -> str:
    with pytest.raises(InputError) as e:
        serving.check_serving(urls, model, chat_timeout_s=10)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_serving_check_refusals(server: CalibServer, not_exo: str) -> None:
    assert _refusal([server.url], "other/model") == (
        f"--exo-api {server.url}: EXO node calib-node has no instance of other/model "
        "(HTTP 404: No instance found for model other/model)")
    twin = server.url.replace("127.0.0.1", "localhost")
    assert _refusal([server.url, twin], server.model) == (
        f"--exo-api {twin}: answers as EXO node calib-node, as {server.url} does; give each node's API once")
    assert _refusal(["http://127.0.0.1:1"], server.model) == (
        "--exo-api http://127.0.0.1:1: does not answer (connection refused; GET /node_id within 10 s)")
    got = _refusal([server.url, not_exo], server.model)  # the first URL answered; the second is named
    assert got.startswith(f"--exo-api {not_exo}: answers, but is not EXO (GET /node_id gave HTTP ")
    assert ("404: Not Found" in got) or ("200: body is not JSON: '<html>hello</html>'" in got), got


def _bench(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pytest benchmarks/` of this repo (its own conftest and plugins), with a fresh report dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_ID", "NODE", "EXO_", "RUN_REPORT"))}
    return subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider", "-q",
                           "--report-dir", str(tmp / "reports"), "--bench-profile", "short", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_exo_api_bad_input_exits_4_before_anything(server: CalibServer, tmp_path: Path) -> None:
    res = _bench(tmp_path, "--exo-api", server.url, "--model", "other/model")
    assert res.returncode == 4, res.stdout + res.stderr
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert lines == [f"ERROR: --exo-api {server.url}: EXO node calib-node has no instance of other/model "
                     "(HTTP 404: No instance found for model other/model)"]
    assert not (tmp_path / "reports").exists()  # no run folder, no benchmark


def test_exo_api_benchmarks_a_serving_exo(server: CalibServer, tmp_path: Path) -> None:
    """No bootstrap, no pass cache: the serving check stands for the chat gate; the same case files."""
    server.reset_log()
    res = _bench(tmp_path, "--exo-api", server.url, "--model", server.model, "-k", "pp128 or concurrency-c2")
    assert res.returncode == 0 and "2 passed" in res.stdout, res.stdout + res.stderr
    run = tmp_path / "reports" / "latest"
    assert not (tmp_path / "reports" / "pass_cache.json").exists()
    check = json.loads((run / "exo" / "serving_check.json").read_text())
    assert [c["url"] for c in check["checks"]] == [server.url] and check["checks"][0]["node_id"] == "calib-node"
    assert any(json.loads(line).get("key") == "exo_api_serving_check" for line in (run / "ledger.jsonl").open())
    for name in ("token_sweep-pp128-tg32", "concurrency-c2"):
        case = json.loads((run / "bench" / f"{name}.json").read_text())
        assert case["fingerprint"] == check["fingerprint"] and case["serving"].startswith("serving check: ")
        assert case["summary"]["errors"] == 0 and case["summary"]["prompt"]["exact"], name
    first = server.log()[0]  # the session's first chat is the serving check's: "Say OK.", 8 tokens, not streamed
    assert first["n"] == 8 and not first["stream"] and not first["bench"]

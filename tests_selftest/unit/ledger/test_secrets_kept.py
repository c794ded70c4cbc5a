"""The token goes nowhere it must not: not to a plain-http HF_ENDPOINT that a node's own shell environment sets,
not into a RunConfig's repr, not into ledger.html in any escaped or encoded form."""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess

import pytest

from modeldrop.config import load_config
from modeldrop.download import DownloadPlan, run_hf_download
from modeldrop.exo.launcher import ExoLauncher, LaunchError
from modeldrop.nodes import LocalNode
from tests_selftest.support.exo_fakes import FakeNode, FakeRunFolder, make_cfg
from tests_selftest.support.plugin_kit import PYTEST, latest, make_suite, subprocess_env

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fake_hf(tmp_path):
    ran = tmp_path / "ran"
    hf = tmp_path / "hf"
    hf.write_text(f"#!/bin/sh\ntouch {ran}\n")
    hf.chmod(0o755)
    return hf, ran


def _download(hf, tmp_path, env, **kw):
    plan = DownloadPlan(str(hf), "org/m", str(tmp_path / "m"), env=env, timeout_s=10, **kw)
    return run_hf_download(LocalNode("node1"), plan, lambda _l: None)


def test_a_plain_http_endpoint_from_the_nodes_own_environment_gets_no_token(fake_hf, tmp_path, monkeypatch):
    hf, ran = fake_hf
    monkeypatch.setenv("HF_ENDPOINT", "http://10.1.2.3:8080")  # what the node's shell profile exports
    res = _download(hf, tmp_path, {"HF_TOKEN": "hf_secret_token"})
    assert res.rc == 2 and not ran.exists(), res
    why = res.hub_reason or ""
    assert "\n" not in why and "hf_secret_token" not in why
    assert "'http://10.1.2.3:8080'" in why and "the node's own shell environment" in why
    assert "--allow-insecure-hub" in why and "env file" in why
    assert _download(hf, tmp_path, {}).rc == 0 and ran.exists()  # no token, nothing to protect
    ran.unlink()
    assert _download(hf, tmp_path, {"HF_TOKEN": "hf_secret_token"}, allow_insecure_hub=True).rc == 0
    ran.unlink()
    # a configured endpoint is the one hf is given: the node's own is not used then
    assert _download(hf, tmp_path, {"HF_TOKEN": "hf_secret_token", "HF_ENDPOINT": "https://hub.example"}).rc == 0


class _NodeWithEndpoint(FakeNode):
    def _p_facts(self, a):
        return {**super()._p_facts(a), "hf_endpoint_env": "http://hub.lan:8080"}


def test_exo_is_not_started_online_with_the_token_for_the_nodes_plain_http_endpoint(tmp_path):
    cfg = make_cfg(tmp_path, ONLINE="true", HF_TOKEN="hf_secret_token")
    la = ExoLauncher(_NodeWithEndpoint(), cfg.node(1), cfg, FakeRunFolder(tmp_path / "reports" / "run1"))
    with pytest.raises(LaunchError) as exc:
        la.command("cluster")
    msg = str(exc.value)
    assert msg.startswith("node1: exo not started online:") and "own shell environment" in msg
    assert "hf_secret_token" not in msg and "\n" not in msg
    ok = make_cfg(tmp_path, ONLINE="true", HF_TOKEN="hf_secret_token", HF_ENDPOINT="https://hub.example")
    la = ExoLauncher(_NodeWithEndpoint(), ok.node(1), ok, FakeRunFolder(tmp_path / "reports" / "run2"))
    assert la.command("cluster")[1]["HF_ENDPOINT"] == "https://hub.example"


def test_run_config_repr_shows_no_token(tmp_path):
    cfg = load_config({"MODEL_ID": "org/model", "NODES": "local"},
                      environ={"HF_TOKEN": "hf_secret_token_value", "PROFILE_PATH": str(tmp_path / "none.json")})
    assert cfg.hf_token == "hf_secret_token_value" and cfg.values["HF_TOKEN"] == "hf_secret_token_value"
    assert "hf_secret_token_value" not in repr(cfg) and "hf_secret_token_value" not in str(cfg)


SECRET = 'hf_s3cr<e&t>"é\\x'  # every character HTML or JSON escapes
LEAKY_GATES = '''
import pytest

SECRET = SECRET_HERE


@pytest.fixture(autouse=True)
def leak(request, extras):
    print("captured stdout carries", SECRET)
    if request.node.name == "test_chat":  # pytest-html's own extras, taken when the call's report is made
        import pytest_html
        extras.append(pytest_html.extras.text("an extra that quotes " + SECRET, name="leak"))
        extras.append(pytest_html.extras.json({"token": SECRET}, name="leak-json"))
    yield
'''.replace("SECRET_HERE", repr(SECRET))


def _forms(secret: str) -> set[str]:
    """The secret as a page can hold it: as is, HTML-escaped (html.escape or markupsafe's `&#34;`/`&#39;`), in a
    JSON string (ASCII-escaped or not), and those JSON forms HTML-escaped again."""
    def esc(s: str) -> set[str]:
        plain = html.escape(s, quote=False)
        return {s, plain, html.escape(s), plain.replace('"', "&#34;").replace("'", "&#39;")}
    return {h2 for h1 in esc(secret) for j in (h1, json.dumps(h1)[1:-1], json.dumps(h1, ensure_ascii=False)[1:-1])
            for h2 in esc(j)}


def _decoded_data_uris(page: str) -> list[str]:
    out = []
    for b64 in re.findall(r"data:[\w/+.-]+(?:;charset=[\w-]+)?;base64,([A-Za-z0-9+/=]+)", page):
        try:
            out.append(base64.b64decode(b64).decode("utf-8", "replace"))
        except ValueError:
            continue
    return out


def test_ledger_html_holds_no_form_of_the_token(pytester):
    env_line = "HF_TOKEN='" + SECRET + "'\n"
    make_suite(pytester, nodes="studio1", behaviour={"chat": f"assert:the token is {SECRET}"}, env_extra=env_line)
    (pytester.path / "gates" / "conftest.py").write_text(LEAKY_GATES)
    result = subprocess.run([*PYTEST, "gates", "--model", "org/tiny-model", "--env-file", "test.env", "-p",
                             "no:cacheprovider"], cwd=pytester.path, env=subprocess_env(), capture_output=True,
                            text=True, timeout=100)
    assert result.returncode == 1, result.stdout[-3000:]
    page = (latest(pytester) / "ledger.html").read_text()
    assert "test_chat" in page and "***" in page
    leaks = [f for f in _forms(SECRET) if f in page]
    assert not leaks, leaks
    decoded = _decoded_data_uris(page)
    assert any("an extra that quotes" in d for d in decoded), "the text extra is not in the page"
    assert not [d for d in decoded if any(f in d for f in _forms(SECRET))]
    assert SECRET not in result.stdout + result.stderr

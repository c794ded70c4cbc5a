"""Hub faults, injected: a silent endpoint (accepts TCP, never answers) must end the look-up within its
bound with one line; a token is never sent to a plain-http non-loopback endpoint without the option."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from modeldrop import hub
from modeldrop.download import DownloadPlan, run_hf_download
from modeldrop.errors import InputError, NodeError
from modeldrop.nodes import LocalNode
from tests_selftest.support.listener import silent_endpoint

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def silent_hub():
    """http://127.0.0.1:<port> that accepts connections and never sends a byte."""
    with silent_endpoint() as url:
        yield url


@pytest.mark.fault("hub-silent", gate="node1_verify", signature="timed out")
def test_silent_hub_is_bounded_and_one_line(silent_hub):
    t0 = time.monotonic()
    with pytest.raises(NodeError) as exc:
        hub.expected_online("org/model", endpoint=silent_hub, timeout_s=2)
    took = time.monotonic() - t0
    assert took < 8, took  # bounded by the 2 s asked for (the default is HUB_TIMEOUT_S, 60 s); slack for a busy CI
    msg = str(exc.value)
    assert "\n" not in msg and "no answer within 2s" in msg and "org/model@main" in msg and silent_hub in msg


@pytest.mark.parametrize(("endpoint", "allow", "refused"), [
    ("http://hub.example.org", False, True),
    ("http://10.1.2.3:8080", False, True),
    ("ftp://hub.example.org", True, True),
    ("http://hub.example.org", True, False),
    ("https://hub.example.org", False, False),
    ("http://127.0.0.7:9000", False, False),
    ("http://[::1]:9000", False, False),
    ("http://localhost:9000", False, False),
])
def test_token_only_to_https_or_loopback(endpoint, allow, refused):
    problem = hub.insecure_endpoint_problem(endpoint, "hf_x", allow)
    assert (problem is not None) == refused
    assert hub.insecure_endpoint_problem(endpoint, None, False) is None  # no token, nothing to protect
    if refused:
        assert "hf_x" not in problem and "\n" not in problem
        with pytest.raises(InputError):
            hub.expected_online("org/model", endpoint=endpoint, token="hf_x", allow_insecure=allow, timeout_s=1)


def test_download_refuses_to_send_the_token_over_plain_http(tmp_path):
    ran = tmp_path / "ran"
    hf = tmp_path / "hf"
    hf.write_text(f"#!/bin/sh\ntouch {ran}\n")
    hf.chmod(0o755)
    plan = DownloadPlan(str(hf), "org/m", str(tmp_path / "m"), timeout_s=10,
                        env={"HF_TOKEN": "hf_secret", "HF_ENDPOINT": "http://hub.example.org"})
    res = run_hf_download(LocalNode("node1"), plan, lambda _l: None)
    assert res.rc != 0 and "--allow-insecure-hub" in (res.hub_reason or "") and not ran.exists()
    res = run_hf_download(LocalNode("node1"), replace(plan, allow_insecure_hub=True), lambda _l: None)
    assert res.rc == 0 and ran.exists()

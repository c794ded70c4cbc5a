"""Gate machinery: ordering, per-node parametrization, skip-with-upstream-reason, -k, --audit, timeouts,
subtests, and the -n refusal. Fake gate modules via pytester; no nodes, no sandbox."""

from __future__ import annotations

import subprocess

from modeldrop.ledger.summary import EXIT_BLOCKED
from tests_selftest.support.plugin_kit import (
    BASE,
    FULL_ORDER_2,
    PYTEST,
    jsonl,
    latest,
    make_suite,
    subprocess_env,
    trace,
)


def run(pytester, *args):
    return pytester.runpytest(*BASE, *args)


def skips(folder) -> dict[str, str]:
    return {r["gate"]: r["reason"] for r in jsonl(folder) if r["event"] == "skip"}


def test_gates_run_in_gate_order_whatever_the_file_order(pytester):
    make_suite(pytester)
    result = run(pytester)
    assert result.ret == 0, result.stdout.str()
    assert trace(pytester) == FULL_ORDER_2
    result = run(pytester, "--collect-only", "-q")
    ids = [line for line in result.stdout.lines if "::" in line]
    assert [i.split("::")[1] for i in ids][:3] == ["test_preflight", "test_node1_download", "test_node1_verify"]


def test_per_node_gates_follow_the_node_count(pytester):
    make_suite(pytester, nodes="studio1")
    assert run(pytester).ret == 0
    assert trace(pytester) == ["preflight", "node1_download", "node1_verify", "node1_canary", "parity",
                               "startup", "cluster", "placement", "transport", "chat"]
    make_suite(pytester, nodes="studio1,studio2,user@studio3:2222")
    result = run(pytester, "--collect-only", "-q")
    assert "gates/test_b_files.py::test_nodek_download[node3]" in result.stdout.str()
    assert run(pytester).ret == 0
    assert trace(pytester)[4:8] == ["node2_download", "node2_verify", "node3_download", "node3_verify"]


def test_failed_gate_blocks_everything_after_it_with_the_root_cause(pytester):
    make_suite(pytester, behaviour={"node1_verify": "assert:2 shards truncated: model-00002-of-00003.safetensors"})
    result = run(pytester, "-rs")
    assert result.ret == 1
    assert trace(pytester) == ["preflight", "node1_download", "node1_verify"]
    reasons = skips(latest(pytester))
    expected = "blocked by node1_verify (failed): 2 shards truncated: model-00002-of-00003.safetensors"
    assert set(reasons) == set(FULL_ORDER_2[3:])
    assert all(r == expected for r in reasons.values()), reasons
    result.stdout.fnmatch_lines([f"SKIPPED*{expected}"])


def test_a_gate_that_skips_itself_blocks_its_dependents(pytester):
    make_suite(pytester, behaviour={"startup": "skip:exo already serving another model"})
    result = run(pytester)
    assert result.ret == EXIT_BLOCKED, "skipped gates verified nothing: the run does not say success"
    reasons = skips(latest(pytester))
    assert reasons["startup"] == "exo already serving another model"
    assert reasons["chat"] == "blocked by startup (skipped): exo already serving another model"


def test_blocked_gate_is_skipped_before_its_fixtures_run(pytester):
    make_suite(pytester, behaviour={"preflight": "fail:ssh: connection refused"})
    pytester.makepyfile(**{"gates/test_c_fixture": '''
import pytest
from pathlib import Path

@pytest.fixture
def expensive():
    Path("fixture-ran").write_text("yes")

@pytest.mark.gate("node1_download")
def test_extra_download(expensive):
    pass
'''})
    run(pytester)
    assert not (pytester.path / "fixture-ran").exists()


def test_k_selects_exactly_the_gate_and_reports_the_expression(pytester):
    make_suite(pytester)
    assert run(pytester).ret == 0
    trace(pytester)
    # The module is called test_a_cluster.py, so a bare `-k cluster` would select its six gates;
    # the ledger prints an expression that selects only the cluster gate.
    result = run(pytester, "-k",
                 "cluster and not chat and not parity and not placement and not startup and not transport")
    assert result.ret == 0
    assert trace(pytester) == ["cluster"]
    start = next(r for r in jsonl(latest(pytester)) if r["event"] == "run_start")
    assert start["model"] == "org/tiny-model"
    from modeldrop.ledger.handoff import parse_block
    make_suite(pytester, behaviour={"cluster": "fail:1 of 2 nodes in topology"})
    run(pytester)
    nxt = parse_block((latest(pytester) / "handoff.md").read_text())["NEXT_COMMAND"]
    assert "-k 'cluster and not " in nxt and "not transport" in nxt


def test_audit_runs_preflight_verify_and_parity_only(pytester):
    make_suite(pytester, nodes="studio1,studio2,studio3")
    assert run(pytester, "--audit").ret == 0
    assert trace(pytester) == ["preflight", "node1_verify", "node2_verify", "node3_verify", "parity"]


def test_default_timeout_marker_unless_the_gate_has_its_own(pytester):
    make_suite(pytester, nodes="studio1")
    pytester.makepyfile(**{"gates/test_c_timeouts": '''
import pytest

@pytest.mark.gate("node1_download")
def test_download_timeout(request):
    from modeldrop.gatetable import timeout_of
    assert request.node.get_closest_marker("timeout").args[0] == timeout_of("node1_download") > 4 * 3600

@pytest.mark.gate("transport")
@pytest.mark.timeout(1)
def test_transport_hangs(request):
    import threading
    threading.Event().wait()
'''})
    result = run(pytester, "-p", "no:cacheprovider")
    assert result.ret == 1
    reasons = skips(latest(pytester))
    assert reasons["chat"].startswith("blocked by transport (failed): Timeout (>1.0s) from pytest-timeout")


def test_failed_subtest_fails_the_gate(pytester):
    make_suite(pytester, nodes="studio1")
    pytester.makepyfile(**{"gates/test_c_subtests": '''
import pytest

@pytest.mark.gate("transport")
def test_transport_checks(subtests):
    for peer in ("a", "b"):
        with subtests.test(peer=peer):
            assert peer == "a", f"peer {peer} unreachable (errno 61)"
'''})
    result = run(pytester)
    assert result.ret == 1
    rec = [r for r in jsonl(latest(pytester)) if r.get("gate") == "transport" and r["event"] in ("pass", "fail")]
    assert [r["event"] for r in rec] == ["fail"]
    assert skips(latest(pytester))["chat"].startswith("blocked by transport (failed)")


def test_xdist_on_gates_is_a_usage_error(pytester):
    make_suite(pytester)
    result = run(pytester, "-n", "2")
    assert result.ret == 4
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "xdist is only for tests_selftest/" in errors[0]
    assert not (pytester.path / "reports").exists()


def test_gate_items_outside_a_gate_run_are_refused(pytester):
    make_suite(pytester)
    result = pytester.runpytest()
    assert result.ret == 4
    assert "pytest gates/ --model org/name" in result.stderr.str()


def test_ctrl_c_stops_the_cluster_this_session_started(pytester):
    make_suite(pytester)
    conftest = pytester.path / "conftest.py"
    plugins = '"fixtures.ledger", "fixtures.core", "fixtures.exo"]'
    conftest.write_text(conftest.read_text().replace('"fixtures.ledger"]', plugins) + '''

import fixtures.exo


class FakeCluster:
    def __init__(self, cfg, pool, folder, **kw):
        self.folder = folder

    def keep_logs(self, role):
        return {}

    def stop_all(self):
        Path("stopped.txt").write_text("stop_all")
        return []

    def stop_canaries(self):
        Path("stopped.txt").write_text("canaries only")


fixtures.exo.ExoCluster = FakeCluster
''')
    pytester.makepyfile(**{"gates/test_c_interrupt": '''
import pytest

@pytest.mark.gate("preflight")
def test_preflight_ctrl_c(exo_cluster):
    raise KeyboardInterrupt
'''})
    (pytester.path / "gates" / "test_a_cluster.py").unlink()
    (pytester.path / "gates" / "test_b_files.py").unlink()
    done = subprocess.run([*PYTEST, "-p", "no:cacheprovider", "gates", "--model", "org/m", "--env-file", "test.env"],
                          cwd=pytester.path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert (pytester.path / "stopped.txt").read_text() == "stop_all"

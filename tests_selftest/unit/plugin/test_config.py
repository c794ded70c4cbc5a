"""Bad input stops the run with one `ERROR:` line and exit status 4, before any node is touched;
profile status: blocked/deprecated stop, watch warns (terminal, ledger.jsonl, handoff.md)."""

from __future__ import annotations

import pytest

from tests_selftest.support.plugin_kit import jsonl, latest, make_suite, trace

USAGE_ERROR = 4


@pytest.fixture
def no_nodes(monkeypatch):
    """make_node fails loudly and records that it was called."""
    calls: list[str] = []

    def refuse(*args, **kwargs):
        calls.append(str(args))
        raise AssertionError("a node was created")

    import modeldrop.nodepool
    monkeypatch.setattr(modeldrop.nodepool, "make_node", refuse)
    return calls


def one_line_usage_error(result) -> str:
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == USAGE_ERROR, out
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, out
    return errors[0]


def touching_gate(pytester):
    pytester.makepyfile(**{"gates/test_c_touch": '''
import pytest
from modeldrop.plugin import node_pool_of

@pytest.mark.gate("preflight")
def test_touch(pytestconfig):
    node_pool_of(pytestconfig).get(1)
'''})


@pytest.mark.parametrize("model", ["../x", "org/x;rm -rf ~", "org", "", "org/../etc", "-rf/x"])
def test_bad_model_ids(pytester, no_nodes, model):
    make_suite(pytester)
    result = pytester.runpytest("gates", f"--model={model}", "--env-file", "test.env")
    line = one_line_usage_error(result)
    assert "--model" in line
    assert not no_nodes and not trace(pytester)
    assert not (pytester.path / "reports").exists()


@pytest.mark.parametrize("nodes", ["bad host!", "user@", "a,a", "a,b,c,d,e", "user@host:99999", "$(reboot)"])
def test_bad_node_specs(pytester, no_nodes, nodes):
    make_suite(pytester)
    line = one_line_usage_error(pytester.runpytest("gates", "--model", "org/m", "--nodes", nodes,
                                                   "--env-file", "test.env"))
    assert "--nodes" in line
    assert not no_nodes


def test_malformed_env_file_line(pytester, no_nodes):
    env = make_suite(pytester, env_extra="this is not a key value line\n")
    line = one_line_usage_error(pytester.runpytest("gates", "--model", "org/m", "--env-file", env.name))
    assert "test.env:4" in line and "malformed" in line


def test_unknown_env_key(pytester, no_nodes):
    make_suite(pytester, env_extra="MODEL_DIR_NODEX=/x\n")
    result = pytester.runpytest("gates", "--model", "org/m", "--env-file", "test.env")
    assert "unknown key 'MODEL_DIR_NODEX'" in one_line_usage_error(result)
    make_suite(pytester, env_extra="MODEL_DIR_NODE9=/x\n")  # a ninth node: the range is said
    result = pytester.runpytest("gates", "--model", "org/m", "--env-file", "test.env")
    assert "MODEL_DIR_NODE9: modeldrop supports 1 to 4 nodes (NODE1..NODE4)" in one_line_usage_error(result)


def test_missing_env_file(pytester, no_nodes):
    make_suite(pytester)
    result = pytester.runpytest("gates", "--model", "org/m", "--env-file", "nope.env")
    assert "--env-file" in one_line_usage_error(result)


def test_invalid_profile_json(pytester, no_nodes):
    make_suite(pytester)
    (pytester.path / "profiles.json").write_text('{"models": {"org/m": {"status": "active",}}}')
    line = one_line_usage_error(pytester.runpytest("gates", "--model", "org/m", "--env-file", "test.env"))
    assert "profiles.json" in line and "invalid JSON" in line


@pytest.mark.parametrize("status", ["blocked", "deprecated"])
def test_blocked_and_deprecated_profiles_stop_before_any_node(pytester, no_nodes, status):
    make_suite(pytester, profiles={"models": {"org/m": {"status": status, "reason": "bad tokenizer"}}})
    touching_gate(pytester)
    line = one_line_usage_error(pytester.runpytest("gates", "--model", "org/m", "--env-file", "test.env"))
    assert f"profile status is {status} (bad tokenizer)" in line
    assert not no_nodes and not trace(pytester)


def test_blocked_profile_runs_with_allow_blocked_model(pytester):
    make_suite(pytester, nodes="studio1",
               profiles={"models": {"org/m": {"status": "blocked", "reason": "bad tokenizer"}}})
    result = pytester.runpytest("gates", "--model", "org/m", "--env-file", "test.env", "--allow-blocked-model")
    assert result.ret == 0


def test_watch_profile_warns_in_terminal_and_ledger(pytester):
    make_suite(pytester, nodes="studio1", profiles={"models": {"org/m": {"status": "watch", "reason": "new arch"}}})
    result = pytester.runpytest("gates", "--model", "org/m", "--env-file", "test.env")
    assert result.ret == 0
    assert "profile status is watch (new arch)" in result.stdout.str()
    folder = latest(pytester)
    assert any(r["event"] == "warning" and "watch" in r["text"] for r in jsonl(folder))
    assert "profile status is watch" in (folder / "handoff.md").read_text()


def test_bad_option_values_name_the_option(pytester, no_nodes):
    make_suite(pytester)
    for args, word in ((["--pass-max-age", "soon"], "PASS_MAX_AGE"), (["--sharding", "Diagonal"], "EXO_SHARDING")):
        line = one_line_usage_error(pytester.runpytest("gates", "--model", "org/m", "--env-file", "test.env", *args))
        assert word in line, line


def test_cli_beats_env_file(pytester):
    make_suite(pytester, env_extra="MODEL_ID=org/from-file\n")
    assert pytester.runpytest("gates", "--env-file", "test.env", "--model", "org/from-cli").ret == 0
    start = jsonl(latest(pytester))[0]
    assert start["model"] == "org/from-cli"
    assert start["sources"]["MODEL_ID"] == "--model"


def test_selftests_need_no_config(pytester):
    pytester.makeconftest('pytest_plugins = ["modeldrop.plugin", "fixtures.ledger"]')
    pytester.makepyfile(
        test_unit="def test_x(evidence):\n    evidence.note('k', 1)\n    assert evidence.notes == {'k': 1}\n")
    result = pytester.runpytest()
    assert result.ret == 0
    assert not (pytester.path / "reports").exists()


def test_sandbox_unavailable_is_one_line(pytester, no_nodes, monkeypatch):
    import sys
    make_suite(pytester)
    monkeypatch.setitem(sys.modules, "sandbox.cluster", None)
    line = one_line_usage_error(pytester.runpytest("gates", "--sandbox"))
    assert line.startswith("ERROR: --sandbox: the sandbox is unavailable")


def test_sandbox_node_count_is_checked(pytester, no_nodes):
    make_suite(pytester)
    for n in ("7", "5", "0"):
        line = one_line_usage_error(pytester.runpytest("gates", "--sandbox", "--sandbox-nodes", n))
        assert line.startswith(f"ERROR: --sandbox-nodes {n}: ") and "1 to 4" in line, line
    assert not no_nodes


@pytest.mark.parametrize("env_extra, args, said", [
    ("", ["--nodes", "a,b,c,d,e"], "--nodes: 5 nodes given; modeldrop supports 1 to 4"),
    ("NODES=a,b,c,d,e\n", [], "test.env:4: 5 nodes given; modeldrop supports 1 to 4"),
    ("NODE5=e\n", [], "test.env:4: NODE5: modeldrop supports 1 to 4 nodes (NODE1..NODE4)"),
    ("MODEL_DIR_NODE5=/m/org--m\n", [], "test.env:4: MODEL_DIR_NODE5: modeldrop supports 1 to 4 nodes"),
    ("", ["--nodes", "a,b,a"], "--nodes: node1 and node3 are the same target a; list each Mac once")])
def test_a_fifth_node_is_one_line(pytester, no_nodes, env_extra, args, said):
    """Five nodes, however given, or one target twice: one line saying what is wrong, exit 4, nothing touched."""
    make_suite(pytester, nodes="a", env_extra=env_extra)
    line = one_line_usage_error(pytester.runpytest("gates", "--model", "org/m", "--env-file", "test.env", *args))
    assert said in line, line
    assert not no_nodes and not (pytester.path / "reports").exists()


@pytest.mark.parametrize("args, flag", [(["--bench-concurrency", "x"], "--bench-concurrency"),
                                        (["--bench-prompt-lens", "0"], "--bench-prompt-lens"),
                                        (["--bench-repeat", "0"], "--bench-repeat"),
                                        (["--bench-node", "0"], "--bench-node")])
def test_bad_bench_option_is_one_line_before_the_run_folder(pytester, no_nodes, args, flag):
    make_suite(pytester)
    conftest = pytester.path / "conftest.py"
    conftest.write_text(conftest.read_text().replace('"fixtures.ledger"]', '"fixtures.ledger", "fixtures.bench"]'))
    pytester.makepyfile(**{"benchmarks/test_b": "import pytest\n\n@pytest.mark.bench('concurrency')\n"
                                                "def test_c(bench_case):\n    pass\n"})
    line = one_line_usage_error(pytester.runpytest("benchmarks", "--model", "org/m", "--env-file", "test.env", *args))
    assert flag in line, line
    assert not no_nodes
    assert not (pytester.path / "reports").exists()


def test_unusable_report_dir_is_one_line(pytester, no_nodes):
    make_suite(pytester)
    (pytester.path / "afile").write_text("not a dir")
    line = one_line_usage_error(pytester.runpytest("gates", "--model", "org/m", "--env-file", "test.env",
                                                   "--report-dir", "afile"))
    assert "--report-dir" in line and "afile" in line, line
    assert not no_nodes and not trace(pytester)

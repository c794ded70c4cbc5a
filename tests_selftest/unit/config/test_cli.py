"""model-drop / model-drop-latest: model id validated first (exit 4, one line), pytest's exit status returned,
the run's summary printed once (by pytest), RING_INPUT_READY only for an all-pass --audit, --help and --version
answered without a run, --bench after a green bootstrap only, the last run found wherever it went."""

from __future__ import annotations

import json

import pytest

from modeldrop import cli, statedirs
from tests_selftest.support.plugin_kit import REPO, make_suite, trace

BENCH = '''
import json
from pathlib import Path

import pytest


@pytest.mark.bench("fake")
def test_fake_bench(request):
    root = Path(str(request.config.rootpath))
    with open(root / "trace.txt", "a") as f:
        f.write("bench\\n")
    (root / "bench_args.json").write_text(json.dumps(list(request.config.invocation_params.args)))
'''


@pytest.fixture
def suite(pytester, monkeypatch, tmp_path_factory):
    """The plugin kit's fake suite as the suite model-drop runs (as if it were this modeldrop's checkout)."""
    make_suite(pytester)
    (pytester.path / "pytest.ini").write_text("[pytest]\n")
    (pytester.path / "benchmarks").mkdir()
    (pytester.path / "benchmarks" / "test_fake_bench.py").write_text(BENCH)
    monkeypatch.chdir(pytester.path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setattr(statedirs, "suite_root", lambda: pytester.path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data")))
    return pytester


@pytest.mark.parametrize("model", ["../x", "org/x;rm -rf ~", "org", ""])
def test_bad_model_id_is_exit_4_one_line(suite, capfd, model):
    assert cli.model_drop_main([model, "--env-file", "test.env"]) == 4
    out, err = capfd.readouterr()
    assert err.count("\n") == 1 and err.startswith("ERROR: model-drop") and "Traceback" not in out + err
    assert not trace(suite) and not (suite.path / "reports").exists()


def test_missing_model_is_exit_4(suite, capfd):
    assert cli.model_drop_main(["--fast"]) == 4
    assert "expected the model id first" in capfd.readouterr().err


def test_green_run_prints_its_summary_once(suite, capfd):
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--fast"]) == 0
    out = capfd.readouterr().out
    assert out.count("run folder: ") == 1 and out.count("LAST_PASS_PHASE: 7 (chat)") == 1
    assert "reports/" in out and "RING_INPUT_READY" not in out
    assert statedirs.last_run() == (suite.path / "reports" / "latest").resolve()


def test_failed_run_returns_pytests_status(suite, capfd):
    suite.path.joinpath("behaviour.json").write_text('{"parity": "fail:manifests differ"}')
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env"]) == 1
    out = capfd.readouterr().out
    assert out.count("KNOWN_BLOCKER: parity (failed): manifests differ") == 1
    assert "-k parity" in out


def test_usage_error_inside_pytest_is_exit_4_and_nothing_more(suite, capfd):
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--nodes", "bad host!"]) == 4
    out, err = capfd.readouterr()
    assert "ERROR: --nodes" in err and "model-drop" not in out + err


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["org/tiny-model", "--help"],
                                  ["org/tiny-model", "--env-file", "test.env", "-k", "parity", "-h"]])
def test_help_is_model_drops_own_and_runs_nothing(suite, capfd, argv):
    assert cli.model_drop_main(argv) == 0
    out, err = capfd.readouterr()
    assert out.startswith("usage: model-drop org/model [--bench] [pytest args…]")
    for own in ("--bench", "--version", "--resume-bootstrap", "--env-file PATH", "-k EXPR"):
        assert own in out, own
    assert "--help" in out.split("every other option, and pytest's own:")[1]  # the pytest help command
    assert "--basetemp" not in out and "no run folder" not in out + err  # not pytest's help
    assert not trace(suite) and not (suite.path / "reports").exists()


def test_latest_help_and_versions(suite, capfd):
    assert cli.model_drop_latest_main(["--help"]) == 0
    assert capfd.readouterr().out.startswith("usage: model-drop-latest [--bench]")
    for main, prog in ((cli.model_drop_main, "model-drop"), (cli.model_drop_latest_main, "model-drop-latest")):
        assert main(["--version"]) == 0
        lines = capfd.readouterr().out.splitlines()
        assert lines[0] == f"{prog} {cli.__version__}"
        assert lines[1].startswith(f"modeldrop:   {statedirs.PACKAGE_DIR}") and str(suite.path) in lines[2]


def test_collect_only_adds_nothing(suite, capfd):
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--collect-only", "--audit"]) == 0
    out, err = capfd.readouterr()
    assert "RING_INPUT_READY" not in out and "model-drop" not in out + err
    assert not (suite.path / "reports").exists() and statedirs.last_run() is None


def test_audit_prints_ring_input_ready_only_when_all_pass(suite, capfd):
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--audit"]) == 0
    out = capfd.readouterr().out
    assert out.rstrip().splitlines()[-1] == "RING_INPUT_READY"
    assert trace(suite) == ["preflight", "node1_verify", "node2_verify", "parity"]
    suite.path.joinpath("behaviour.json").write_text('{"node2_verify": "fail:1 shard truncated"}')
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--audit"]) == 1
    assert "RING_INPUT_READY" not in capfd.readouterr().out


def test_bench_runs_the_benchmarks_after_a_green_bootstrap(suite, capfd):
    argv = ["org/tiny-model", "--env-file", "test.env", "--bench", "--fast", "-k", "not transport or transport"]
    assert cli.model_drop_main(argv) == 0
    out = capfd.readouterr().out
    assert "bootstrap green; the benchmarks next" in out
    ran = trace(suite)
    assert ran[:-1] == ["preflight", "node1_download", "node1_verify", "node1_canary", "node2_download",
                        "node2_verify", "parity", "startup", "cluster", "placement", "transport", "chat"]
    assert ran[-1] == "bench"  # the benchmarks ran last, without the gate selection and --fast
    args = json.loads(suite.path.joinpath("bench_args.json").read_text())
    assert args == ["benchmarks/", "--model", "org/tiny-model", "--env-file", "test.env"]


def test_bench_leaves_out_gate_selection():
    rest = ["--env-file", "x.env", "-k", "transport", "--fast", "-m", "gate", "--lf", "-kchat", "--sandbox",
            "--bench-profile", "short", "--resume-bootstrap", "-q", "--deselect=a::b"]
    assert cli.bench_args(rest) == ["--env-file", "x.env", "--sandbox", "--bench-profile", "short", "-q"]


def test_bench_is_not_run_when_the_bootstrap_is_not_green(suite, capfd):
    suite.path.joinpath("behaviour.json").write_text('{"placement": "fail:no runners"}')
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--bench"]) == 1
    assert "the benchmarks were not run" in capfd.readouterr().err
    assert "bench" not in trace(suite)
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--bench", "--audit"]) == 4
    assert "--bench runs the benchmarks after a bootstrap" in capfd.readouterr().err


def test_a_run_inside_another_checkout_says_which_one_runs(suite, capfd, tmp_path, monkeypatch):
    old = tmp_path / "old-checkout"
    for d in ("gates", "modeldrop"):
        (old / d).mkdir(parents=True)
    for f in ("conftest.py", "pyproject.toml"):
        (old / f).write_text("")
    (old / "modeldrop" / "__init__.py").write_text('__version__ = "0.0.9"\n')
    monkeypatch.chdir(old / "gates")
    argv = ["org/tiny-model", "--env-file", str(suite.path / "test.env"), "--audit",
            "--report-dir", str(tmp_path / "r")]
    assert cli.model_drop_main(argv) == 0
    out, err = capfd.readouterr()
    line = next(x for x in err.splitlines() if x.startswith("model-drop: running modeldrop"))
    assert f"not the checkout at {old} (modeldrop 0.0.9)" in line and str(suite.path) in line
    assert out.rstrip().splitlines()[-1] == "RING_INPUT_READY" and (tmp_path / "r" / "latest").is_dir()


def test_model_drop_latest_uses_the_last_model(suite, capfd):
    assert cli.model_drop_latest_main([]) == 4
    assert "no previous run" in capfd.readouterr().err
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env"]) == 0
    first = (suite.path / "reports" / "latest").resolve()
    trace(suite)
    capfd.readouterr()
    assert cli.model_drop_latest_main(["--resume-bootstrap"]) == 0  # the last run's env file comes with it
    out = capfd.readouterr().out
    assert f"model-drop-latest: org/tiny-model (from {first}" in out
    assert f"env file {suite.path / 'test.env'}" in out
    assert trace(suite) == []  # everything reused


def test_model_drop_latest_finds_the_last_run_wherever_it_went(suite, capfd, tmp_path):
    """A run whose folder went elsewhere (the sandbox demo's RUN_REPORT_DIR) is still the last run."""
    elsewhere = tmp_path / "sandbox-reports"
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--report-dir", str(elsewhere)]) == 0
    first = (elsewhere / "latest").resolve()
    capfd.readouterr()
    assert cli.model_drop_latest_main(["--collect-only"]) == 0
    assert f"(from {first}, env file {suite.path / 'test.env'})" in capfd.readouterr().out
    assert cli.model_drop_latest_main(["--report-dir", str(elsewhere), "--collect-only"]) == 0
    assert f"(from {first}" in capfd.readouterr().out


def test_model_drop_latest_finds_the_env_files_report_dir(suite, capfd, monkeypatch):
    monkeypatch.delenv("RUN_REPORT_DIR", raising=False)
    suite.path.joinpath("test.env").write_text(suite.path.joinpath("test.env").read_text() + "RUN_REPORT_DIR=runs\n")
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--audit"]) == 0
    assert (suite.path / "runs" / "latest").exists() and not (suite.path / "reports").exists()
    first = (suite.path / "runs" / "latest").resolve()
    capfd.readouterr()
    assert cli.model_drop_latest_main(["--env-file", "test.env", "--collect-only"]) == 0
    out = capfd.readouterr().out
    assert f"model-drop-latest: org/tiny-model (from {first})" in out
    assert cli.model_drop_latest_main(["--report-dir", "elsewhere"]) == 4
    assert f"no previous run under {suite.path / 'elsewhere'}" in capfd.readouterr().err


def test_audit_from_the_env_file_prints_ring_input_ready(suite, capfd):
    suite.path.joinpath("test.env").write_text(suite.path.joinpath("test.env").read_text() + "AUDIT=1\n")
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env"]) == 0
    assert capfd.readouterr().out.rstrip().splitlines()[-1] == "RING_INPUT_READY"
    assert trace(suite) == ["preflight", "node1_verify", "node2_verify", "parity"]

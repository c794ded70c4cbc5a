"""model-drop / model-drop-latest: model id validated first (exit 4, one line), pytest's exit status
returned, run folder and Hand-off Block printed, RING_INPUT_READY only for an all-pass --audit."""

from __future__ import annotations

import pytest

from modeldrop import cli
from tests_selftest.support.plugin_kit import REPO, make_suite, trace


@pytest.fixture
def suite(pytester, monkeypatch):
    make_suite(pytester)
    monkeypatch.chdir(pytester.path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
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


def test_green_run_prints_folder_and_handoff(suite, capfd):
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--fast"]) == 0
    out = capfd.readouterr().out
    assert "run folder: " in out and "reports/" in out
    tail = out[out.index("run folder: "):]
    for key in ("MODEL: org/tiny-model", "LAST_PASS_PHASE: 7 (chat)", "NEXT_COMMAND: ", "DO_NOT_REPEAT: preflight,"):
        assert key in tail
    assert "RING_INPUT_READY" not in out


def test_failed_run_returns_pytests_status(suite, capfd):
    suite.path.joinpath("behaviour.json").write_text('{"parity": "fail:manifests differ"}')
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env"]) == 1
    out = capfd.readouterr().out
    assert "KNOWN_BLOCKER: parity (failed): manifests differ" in out
    assert "-k parity" in out


def test_usage_error_inside_pytest_is_exit_4(suite, capfd):
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--nodes", "bad host!"]) == 4
    out, err = capfd.readouterr()
    assert "ERROR: --nodes" in err and "no run folder was written" in out


def test_audit_prints_ring_input_ready_only_when_all_pass(suite, capfd):
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--audit"]) == 0
    out = capfd.readouterr().out
    assert out.rstrip().splitlines()[-1] == "RING_INPUT_READY"
    assert trace(suite) == ["preflight", "node1_verify", "node2_verify", "parity"]
    suite.path.joinpath("behaviour.json").write_text('{"node2_verify": "fail:1 shard truncated"}')
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env", "--audit"]) == 1
    assert "RING_INPUT_READY" not in capfd.readouterr().out


def test_model_drop_latest_uses_the_last_model(suite, capfd):
    assert cli.model_drop_latest_main([]) == 4
    assert "no previous run" in capfd.readouterr().err
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env"]) == 0
    trace(suite)
    capfd.readouterr()
    assert cli.model_drop_latest_main(["--env-file", "test.env", "--resume-bootstrap"]) == 0
    out = capfd.readouterr().out
    assert "model-drop-latest: org/tiny-model" in out and "MODEL: org/tiny-model" in out
    assert trace(suite) == []  # everything reused


def test_model_drop_latest_finds_the_env_files_report_dir(suite, capfd, monkeypatch):
    monkeypatch.delenv("RUN_REPORT_DIR", raising=False)
    suite.path.joinpath("test.env").write_text(suite.path.joinpath("test.env").read_text() + "RUN_REPORT_DIR=runs\n")
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env"]) == 0
    assert (suite.path / "runs" / "latest").exists() and not (suite.path / "reports").exists()
    trace(suite)
    capfd.readouterr()
    assert cli.model_drop_latest_main(["--env-file", "test.env", "--resume-bootstrap"]) == 0
    out = capfd.readouterr().out
    assert "model-drop-latest: org/tiny-model" in out and str(suite.path / "runs" / "latest") in out
    assert cli.model_drop_latest_main(["--report-dir", "elsewhere"]) == 4
    assert "no previous run under" in capfd.readouterr().err


def test_audit_from_the_env_file_prints_ring_input_ready(suite, capfd):
    suite.path.joinpath("test.env").write_text(suite.path.joinpath("test.env").read_text() + "AUDIT=1\n")
    assert cli.model_drop_main(["org/tiny-model", "--env-file", "test.env"]) == 0
    assert capfd.readouterr().out.rstrip().splitlines()[-1] == "RING_INPUT_READY"
    assert trace(suite) == ["preflight", "node1_verify", "node2_verify", "parity"]

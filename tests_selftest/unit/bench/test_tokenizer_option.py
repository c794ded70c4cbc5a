"""--bench-tokenizer says in one line (exit 4, before any run) when it cannot be used: the tokenizer library (the
bench extra) missing, or no tokenizer.json in the dir; it never falls back to calibration silently."""

from __future__ import annotations

import pytest

from modeldrop.bench import prompts
from tests_selftest.support import REPO


def test_tokenizer_problem_names_the_fix(tmp_path, monkeypatch):
    assert prompts.tokenizer_problem(tmp_path) == (f"no tokenizer.json in {tmp_path}; give the model's local dir "
                                                   "(its tokenizer.json and chat template)")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert prompts.tokenizer_problem(tmp_path) is None
    monkeypatch.setattr(prompts, "TOKENIZER_LIBRARY", "modeldrop_no_such_tokenizer_library")
    assert "install modeldrop with its bench extra (modeldrop[bench])" in prompts.tokenizer_problem(tmp_path)


def test_an_unusable_bench_tokenizer_is_a_usage_error(pytester, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    pytester.makeconftest('pytest_plugins = ["fixtures.bench"]')
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("--bench-tokenizer", str(pytester.path / "nowhere"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert errors == [f"ERROR: --bench-tokenizer {pytester.path / 'nowhere'}: no tokenizer.json in "
                      f"{pytester.path / 'nowhere'}; give the model's local dir (its tokenizer.json and chat template)"]

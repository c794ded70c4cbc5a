"""The pytest-html adapter is the only module with pytest-html internals, and refuses another major version."""

from __future__ import annotations

import re

import pytest

from modeldrop.plugin import html_adapter
from tests_selftest.support import REPO

PRIVATE = re.compile(r"_pytest\.|_write_report|_generate_report|_inicache")


def test_another_pytest_html_major_is_one_line(monkeypatch):
    monkeypatch.setattr("importlib.metadata.version", lambda name: "5.0.1")
    with pytest.raises(pytest.UsageError) as e:
        html_adapter.check_supported()
    assert str(e.value).count("\n") == 0 and "pytest-html 5.0.1" in str(e.value) and "4.x" in str(e.value)


def test_the_installed_pytest_html_is_supported():
    html_adapter.check_supported()


def test_only_the_adapter_touches_private_internals():
    hits = [str(p.relative_to(REPO)) for p in (REPO / "modeldrop").rglob("*.py")
            if PRIVATE.search(p.read_text(encoding="utf-8")) and p.name != "html_adapter.py"]
    assert hits == []

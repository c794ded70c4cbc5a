"""The one place that reaches into pytest-html's internals (it has no public API for these).

A live ledger needs three things pytest-html 4 does not offer publicly: writing ledger.html
atomically and redacted (its report object's `_write_report`), updating the summary prefix between
tests (`_report.additional_summary`), and regenerating the page at a gate's start
(`_generate_report`). `check_supported()` refuses other pytest-html major versions with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SUPPORTED_MAJOR = 4


def check_supported() -> None:
    """One-line UsageError when the installed pytest-html is not the major version this adapter knows."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        found = version("pytest-html")
    except PackageNotFoundError:
        return
    if found.split(".")[0] != str(SUPPORTED_MAJOR):
        raise pytest.UsageError(f"pytest-html {found}: modeldrop's live ledger supports pytest-html "
                                f"{SUPPORTED_MAJOR}.x; "
                                f"install 'pytest-html>={SUPPORTED_MAJOR}.1,<{SUPPORTED_MAJOR + 1}'")


def find_report(config: pytest.Config) -> Any:
    """pytest-html's report object (the one that writes ledger.html), if any."""
    for plugin in config.pluginmanager.get_plugins():
        if hasattr(plugin, "_report_path") and hasattr(plugin, "_generate_report"):
            return plugin
    return None


def install_writer(report: Any, make_writer: Callable[[Path], Callable[[str], None]]) -> None:
    """Route the report's file writes through `make_writer(report path)` (atomic, redacted)."""
    if report is not None and hasattr(report, "_write_report"):
        report._write_report = make_writer(Path(report._report_path))


def set_prefix(report: Any, update: Callable[[list[str]], None], regenerate: bool) -> None:
    """Apply `update` to the report's summary prefix now; `regenerate` rewrites the page at once."""
    data = getattr(report, "_report", None)
    if data is None:
        return
    try:
        update(data.additional_summary["prefix"])
        if regenerate:
            report._generate_report()
    except (AttributeError, KeyError, TypeError, ValueError):
        pass

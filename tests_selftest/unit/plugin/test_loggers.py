"""The logger registry can be iterated (as pytest's logging plugin does at every test phase) while other threads
create loggers: the race that once failed a healthy gate's teardown with "dictionary changed size"."""

from __future__ import annotations

import logging
import threading
import time

from _pytest.logging import LogCaptureHandler, catching_logs

from modeldrop import loggers

PREFIX = "modeldrop-selftest-race"


def _create_loggers(stop: threading.Event, limit: int) -> None:
    """Create loggers one by one, yielding the GIL between them, until `limit` or `stop`."""
    for i in range(limit):
        if stop.is_set():
            return
        logging.getLogger(f"{PREFIX}.{i}")
        time.sleep(0)


def test_pytests_handler_attach_survives_loggers_created_meanwhile():
    before = set(logging.Logger.manager.loggerDict)
    loggers.install()
    assert before <= set(logging.Logger.manager.loggerDict)  # every logger kept
    stop = threading.Event()
    maker = threading.Thread(target=_create_loggers, args=(stop, 300), daemon=True)
    errors: list[str] = []
    maker.start()
    try:
        while maker.is_alive():
            try:
                with catching_logs(LogCaptureHandler()):
                    pass
            except RuntimeError as e:
                errors.append(str(e))
    finally:
        stop.set()
        maker.join()
        for name in [n for n in logging.Logger.manager.loggerDict if n.startswith(PREFIX)]:
            del logging.Logger.manager.loggerDict[name]
    assert errors == []


def test_install_is_idempotent_and_getlogger_still_registers():
    loggers.install()
    registry = logging.Logger.manager.loggerDict
    loggers.install()
    assert logging.Logger.manager.loggerDict is registry
    log = logging.getLogger(f"{PREFIX}.one")
    try:
        assert registry[f"{PREFIX}.one"] is log and f"{PREFIX}.one" in registry.keys()
        assert isinstance(registry.items(), list)
    finally:
        del registry[f"{PREFIX}.one"]


def test_the_plugin_installs_it_before_any_test_runs(pytester):
    pytester.makepyfile(test_registry='''
import logging

from modeldrop.loggers import SnapshotDict


def test_registry():
    assert isinstance(logging.Logger.manager.loggerDict, SnapshotDict)
''')
    result = pytester.runpytest_subprocess("-p", "modeldrop.plugin", "-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)

"""Interrupts: the first SIGINT or SIGTERM unwinds the run; any later one, however close behind, is only noted
(a second Ctrl-C that landed before pytest's interrupt hook once ended a run with exit 0 and its cleanup cut)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from modeldrop import interrupts

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signal handlers are the main thread's")


def test_the_first_signal_raises_and_every_later_one_is_noted():
    noted: list[str] = []
    restore = interrupts.install(noted.append)
    try:
        with pytest.raises(KeyboardInterrupt) as first:
            os.kill(os.getpid(), signal.SIGTERM)  # os.kill runs the handler before it returns
        assert interrupts.interrupt_reason(first.value) == "interrupted (SIGTERM)"
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert noted == ["SIGINT", "SIGTERM"]
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is not None and signal.getsignal(signal.SIGTERM) is not None


def test_ctrl_c_is_named_as_such_and_an_ignored_sigint_stays_ignored():
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's SIGINT
    try:
        restore = interrupts.install(lambda name: None)
        try:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing raised
        finally:
            restore()
    finally:
        signal.signal(signal.SIGINT, saved)
    restore = interrupts.install(lambda name: None)
    try:
        with pytest.raises(KeyboardInterrupt) as first:
            os.kill(os.getpid(), signal.SIGINT)
        assert interrupts.interrupt_reason(first.value) == "interrupted (Ctrl-C)"
    finally:
        restore()

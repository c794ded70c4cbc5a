"""Node-side limits of remote work: the `tool` probe's timeout holds when its child leaves a process holding the
output pipe; long probes and `hf download` end by themselves on the node when their limit passes or the
controller's connection is gone, and are recorded on the node while they run."""

from __future__ import annotations

import time

import pytest

from modeldrop.nodes import LocalNode
from modeldrop.probes import _proc

pytestmark = pytest.mark.timeout(120)


def test_tool_timeout_is_bounded_when_a_grandchild_holds_the_pipe(tmp_path):
    """A tool that leaves a background child holding its stdout: the timeout still ends the probe within its limit
    plus a short grace, and the background child is stopped with it."""
    script = tmp_path / "lingers"
    script.write_text("#!/bin/sh\nsleep 30 &\necho $! > \"$0.pid\"\nsleep 30\n")
    script.chmod(0o755)
    t0 = time.monotonic()
    res = LocalNode("node1").run_probe("tool", {"path": str(script), "args": [], "timeout": 1}, timeout=60)
    took = time.monotonic() - t0
    assert res["error"] == "timed out after 1s" and took < 8, (took, res)
    bg = int((tmp_path / "lingers.pid").read_text())
    deadline = time.monotonic() + 5
    while _proc.proc_info(bg) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _proc.proc_info(bg) is None, "the tool's background child outlived the probe"

"""A registered remote process is ours only when its command line holds each identity word as a whole word: the
identity of `hf download` into /x/m does not match a download into /x/m2 (a substring match did)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from modeldrop.cleanup import RemoteProcess, stop_remote
from modeldrop.nodes import LocalNode
from modeldrop.probes import _proc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def other_download(tmp_path):
    """A process that looks like `hf download org/m --local-dir=<tmp>/m2` (another run's, into another dir)."""
    target = f"--local-dir={tmp_path}/m2"
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "download", "org/m", target])
    deadline = time.monotonic() + 10
    while target not in ((_proc.proc_info(p.pid) or {}).get("cmdline") or []):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield p
    p.kill()
    p.wait()


def test_identity_words_are_whole_words_not_substrings(tmp_path, other_download):
    mine = RemoteProcess(LocalNode("node1"), other_download.pid, "hf download org/m",
                         ("download", f"--local-dir={tmp_path}/m"))
    line = stop_remote(mine, grace_s=1)
    assert other_download.poll() is None, line
    assert "left alone" in line and "(not ours)" in line, line
    same = RemoteProcess(LocalNode("node1"), other_download.pid, "hf download org/m",
                         ("download", f"--local-dir={tmp_path}/m2"))
    assert "stopped-term" in stop_remote(same, grace_s=1) and other_download.wait(5) is not None

"""The operator's install path in its quick form (.ci/operator_path.py --quick; CI runs the full form, a fresh venv
and a bootstrap): the wheel built from this tree carries the suite; installed, `model-drop --version`, `--help` and
`--suite-dir` answer, a run with no writable data dir is exit 4 in one line, `model-drop <model> --audit` of the
sandbox's node 1 ends RING_INPUT_READY with its run folder in the user's data dir, plain pytest over the installed
gates reuses those passes, and nothing is written in the empty directory or inside the installed package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests_selftest.support import REPO

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(900)]


def test_operator_path_quick(clean):
    sbx, _ = clean
    done = subprocess.run([sys.executable, str(REPO / ".ci" / "operator_path.py"), "--quick",
                           "--sandbox-root", str(sbx.root)], capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = done.stdout
    assert "\nRING_INPUT_READY\n" in out and "operator path: every check held" in out
    assert "(installed)" in out and "[exit 4]" in out

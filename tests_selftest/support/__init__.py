"""Shared helpers of the self-tests (no tests here): whole runs, the fault matrix, fakes, fixtures, sandboxes.

`REPO` is the repository root, `DATA` the self-tests' data folder (golden EXO bodies, the guide's env file).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests_selftest" / "data"

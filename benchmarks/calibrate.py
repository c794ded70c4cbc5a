"""Print the measuring client's calibration errors at c = 1, 8, 32 and its CPU time per token.

    python benchmarks/calibrate.py [--levels 1,8,32] [--chunk 1] [--gap-ms 20] [--json]

Same as `python -m modeldrop.bench.calibrate`; starts tests_selftest/calibration_server.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeldrop.bench.calibrate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())

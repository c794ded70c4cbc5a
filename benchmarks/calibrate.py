"""Print the measuring client's calibration errors at c = 1, 8, 32 and its CPU time per token.

    python benchmarks/calibrate.py [--levels 1,8,32] [--chunk 1] [--gap-ms 20] [--json]

Same as `python -m sandbox.calibrate`; starts the sandbox's calibration server.
"""

from sandbox.calibrate import main

if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m sandbox.exo_real build [--generation new|old] [--force]`: build (or check) the real-EXO install.

Prints the install's root and how long the build took (or that the cached one was reused). Exit 0
ok, 1 the install cannot be built (one line saying what is missing or what failed).
"""

from __future__ import annotations

import argparse
import sys
import time

from sandbox.exo_real.install import InstallError, current, ensure_install


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sandbox.exo_real")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the install once (cached by an input hash)")
    b.add_argument("--generation", choices=("new", "old"), default="new")
    b.add_argument("--force", action="store_true", help="rebuild even when the cached install matches")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    cached = not a.force and current(a.generation) is not None
    try:
        got = ensure_install(a.generation, force=a.force)
    except InstallError as e:
        print(f"sandbox.exo_real: {e}", file=sys.stderr)
        return 1
    how = "cached" if cached else f"built in {got.built_s or time.monotonic() - t0:.0f}s"
    print(f"real EXO {a.generation}: {got.root} ({how}, checked in {time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

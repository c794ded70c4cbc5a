"""Print the measuring client's calibration errors at c = 1, 8, 32 and its CPU time per token, against
the sandbox's calibration server (started here, stopped at the end).

    python -m sandbox.calibrate [--levels 1,8,32] [--chunk 1] [--gap-ms 20] [--json]
"""

from __future__ import annotations

import argparse
import json

from modeldrop.bench.calibrate import format_row, measure
from sandbox.calibration_server import CalibServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print the client's calibration errors (c=1, 8, 32).")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--ttft-ms", type=float, default=100.0)
    ap.add_argument("--gap-ms", type=float, default=20.0)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    a = ap.parse_args(argv)
    srv = CalibServer.start()
    try:
        rows = []
        for c in (int(x) for x in a.levels.split(",")):
            srv.reset_log()
            rows.append(measure(srv.url, srv.model, c, ttft_ms=a.ttft_ms, gap_ms=a.gap_ms, tokens=a.tokens,
                                chunk=a.chunk, rounds=a.rounds, server_log=srv.log))
    finally:
        srv.stop()
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"calibration: ttft {a.ttft_ms} ms, gap {a.gap_ms} ms ({1000 / a.gap_ms:.1f} tok/s), "
              f"{a.tokens} tokens, {a.chunk} token(s)/chunk, {a.rounds} rounds")
        for m in rows:
            print(format_row(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m sandbox.hub --repos DIR --host H --port P --log FILE [--pid-file F]`: run the hub in the
foreground until SIGTERM/SIGINT (what `start_hub` starts)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from sandbox.hub.server import HubServer


def serve(argv: list[str] | None = None) -> int:
    """Run the hub in the foreground until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(prog="python -m sandbox.hub", description="A fake Hugging Face hub for the real "
                                 "`hf download` CLI (HF_ENDPOINT), with fault switches.")
    ap.add_argument("--repos", required=True, type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8900)
    ap.add_argument("--log", type=Path)
    ap.add_argument("--pid-file", type=Path)
    a = ap.parse_args(argv)
    server = HubServer(a.repos, a.host, a.port, a.log)
    if a.pid_file:
        tmp = a.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, a.pid_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"hub serving {a.repos} on http://{a.host}:{a.port} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(serve())

"""Progress of a long probe (prepended to `manifest` and `hashes`; not a probe).

`progress_say(fields, force=False)` writes `modeldrop-progress <json object>` on stderr, at most every
PROGRESS_EVERY_S seconds unless forced (thread-safe); the controller hands the object to the probe's progress
callback (`Node.run_probe(progress=…)`) and keeps the line out of the probe's stderr.
"""

from __future__ import annotations

import json
import sys
import threading
import time

PROGRESS_TAG = "modeldrop-progress"
PROGRESS_EVERY_S = 2.0
_PROGRESS = {"last": 0.0, "lock": threading.Lock()}


def progress_say(fields: dict, force: bool = False) -> None:
    """Say how far the probe is (see the module docstring); a closed stderr is not the probe's problem."""
    with _PROGRESS["lock"]:
        now = time.monotonic()
        if not force and now - _PROGRESS["last"] < PROGRESS_EVERY_S:
            return
        _PROGRESS["last"] = now
        try:
            sys.stderr.write(PROGRESS_TAG + " " + json.dumps(fields, sort_keys=True) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

"""Where the self-tests' sandboxes live: SANDBOX_BASE ($MODELDROP_SELFTEST_SANDBOX), one folder per slot."""

from __future__ import annotations

import os
from pathlib import Path

SANDBOX_BASE = Path(os.environ.get("MODELDROP_SELFTEST_SANDBOX", "/var/tmp/modeldrop-selftest"))

"""emulator.json: per-node identity, timing overrides and fault switches.

Contract: ``load_config()`` reads the file named by ``EXO_EMULATOR_CONFIG`` (missing variable
or file gives a NEW-generation default identity on 127.0.0.1) and never raises on unknown keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

NEW_VERSION = "0.3.70"
OLD_VERSION = "1.0.71"


@dataclass(frozen=True)
class Timing:
    """Periods in seconds; defaults are exo's own."""

    hello_s: float = 1.0
    election_s: float = 3.0
    node_timeout_s: float = 30.0
    master_plan_s: float = 10.0
    edge_probe_s: float = 10.0
    info_s: float = 1.0
    download_scan_s: float = 60.0
    worker_plan_s: float = 0.1
    keepalive_s: float = 10.0
    ring_retry_s: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    ring_connect_timeout_s: float = 10.0
    runner_backoff_s: tuple[float, float] = (0.5, 10.0)
    load_layer_s: float = 0.0
    card_reconcile_s: float = 1.0


@dataclass(frozen=True)
class Faults:
    """Fault switches (see README.md, Faults)."""

    isolated: bool = False
    namespace: str | None = None
    crash_at_start: bool = False
    crash_loop: float | None = None
    runner_never_ready: str | None = None  # "loading" | "warmup"
    state_runner_lag: float | None = None
    ring_connect_error: int | None = None
    chat_truncated_body: bool = False
    stream_error_chunk: bool = False
    token_rate: float | None = None
    stall_mid_stream: int | None = None
    card_add_fails: bool = False
    runner_killed_signal: int | None = None
    late_rescan_s: float | None = None
    api_trickle: tuple[str, ...] = ()  # GET paths whose JSON answer goes out one byte a second
    chat_trickle_body: bool = False  # the non-stream chat body goes out one byte a second


@dataclass(frozen=True)
class EmulatorConfig:
    """One node's identity as the sandbox writes it."""

    generation: str = "new"
    version: str = NEW_VERSION
    node_address: str = "127.0.0.1"
    peer_addresses: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()  # addresses this node's cabling does not reach (a ring's non-neighbours)
    friendly_name: str = "sbx-node"
    ram_total_bytes: int = 17179869184
    ram_available_bytes: int = 12884901888
    layout: str = "macos"
    model_id: str = "Mac mini"
    chip_id: str = "Apple M4 Pro"
    os_version: str = "15.5"
    os_build_version: str = "24F74"
    hf_endpoint: str | None = None  # the sandbox hub; used only when HF_ENDPOINT is unset
    timing: Timing = field(default_factory=Timing)
    faults: Faults = field(default_factory=Faults)

    @property
    def is_new(self) -> bool:
        return self.generation == "new"


def _timing(raw: dict[str, Any]) -> Timing:
    known = {k: v for k, v in raw.items() if k in Timing.__dataclass_fields__}
    for key in ("ring_retry_s", "runner_backoff_s"):
        if key in known:
            known[key] = tuple(float(x) for x in known[key])
    return Timing(**known)


def _faults(raw: dict[str, Any]) -> Faults:
    known = {k: v for k, v in raw.items() if k in Faults.__dataclass_fields__}
    rnr = known.get("runner_never_ready")
    if rnr is True:
        known["runner_never_ready"] = "loading"
    elif rnr is False:
        known["runner_never_ready"] = None
    if "api_trickle" in known:
        paths = known["api_trickle"]
        known["api_trickle"] = (paths,) if isinstance(paths, str) else tuple(paths or ())
    lag = known.get("state_runner_lag")
    if lag is True:
        known["state_runner_lag"] = 30.0
    elif lag is False:
        known["state_runner_lag"] = None
    return Faults(**known)


def config_from_dict(raw: dict[str, Any]) -> EmulatorConfig:
    """Build a config from the parsed JSON; unknown keys are ignored."""
    gen = raw.get("generation", "new")
    version = raw.get("version") or (NEW_VERSION if gen == "new" else OLD_VERSION)
    simple = {k: v for k, v in raw.items()
              if k in EmulatorConfig.__dataclass_fields__
              and k not in ("timing", "faults", "peer_addresses", "unreachable")}
    simple["generation"] = gen
    simple["version"] = version
    return EmulatorConfig(
        **simple,
        peer_addresses=tuple(raw.get("peer_addresses", ())),
        unreachable=tuple(raw.get("unreachable") or ()),
        timing=_timing(raw.get("timing") or {}),
        faults=_faults(raw.get("faults") or {}),
    )


def load_config() -> EmulatorConfig:
    """Read ``$EXO_EMULATOR_CONFIG``."""
    path = os.environ.get("EXO_EMULATOR_CONFIG")
    if not path or not os.path.exists(path):
        return EmulatorConfig()
    with open(path, encoding="utf-8") as f:
        return config_from_dict(json.load(f))

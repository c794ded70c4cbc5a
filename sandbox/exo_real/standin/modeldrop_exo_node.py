"""Make one real EXO process keep to its sandbox node's own loopback address, without editing EXO.

Several sandbox nodes (and several sandboxes) share one host, while real EXO binds 0.0.0.0 and
uses one port on every node. `apply()` (called by the node's `exo` entry point, in EXO's process
and again in each runner process, which re-imports the entry point) patches four library calls,
keyed on `MODELDROP_EXO_NODE_ADDRESS`:
- hypercorn's `Config.bind`: `0.0.0.0:<port>` becomes `<node address>:<port>` (EXO's API bind);
- psutil's `net_if_addrs()`: the node's own address alone (EXO advertises these interfaces, and
  its peers' reachability probes and ring placement use them);
- MLX's `distributed.init`: the ring hostfile entry `0.0.0.0:<port>` (the rank's own listener)
  becomes `<node address>:<port>`, so ranks on one host do not collide; and a 1 s pause before the
  init, which blocks holding the GIL, so the runner's RunnerConnecting status leaves first (without
  it two CPU ranks deadlock: each waits for the other's status).
- socket `connect`: an address in `MODELDROP_EXO_UNREACHABLE` (the sandbox's cabling: on a ring, the
  nodes that are not this node's neighbours) fails with EHOSTUNREACH, as a Mac on a Thunderbolt ring with
  no shared LAN cannot reach a non-neighbour: EXO's `/node_id` reachability probes to it fail (no
  topology edge), and so would anything else EXO dialled there.
Nothing else changes; without the variable `apply()` does nothing.
`load_faults(path)` turns the node's fault switches (the `faults` object of a JSON file) into
environment variables EXO's processes inherit: `namespace` (the transport stand-in discovers
under that namespace instead: a mismatch) and `runner_sigkill_s` (every runner process SIGKILLs
itself that many seconds after it starts, as an OOM kill would); and its cabling, the file's
`unreachable` addresses, into `MODELDROP_EXO_UNREACHABLE`.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from typing import Any

ADDRESS_ENV = "MODELDROP_EXO_NODE_ADDRESS"
UNREACHABLE_ENV = "MODELDROP_EXO_UNREACHABLE"
PRE_INIT_PAUSE_S = 1.0


def own(address: str, hostport: str) -> str:
    """`0.0.0.0:<port>` -> `<address>:<port>`; anything else unchanged."""
    return f"{address}:{hostport.split(':', 1)[1]}" if hostport.startswith("0.0.0.0:") else hostport


def _patch_bind(address: str) -> None:
    import hypercorn.config as hc

    prop = hc.Config.bind
    if getattr(prop.fset, "modeldrop", False):
        return

    def setter(self: Any, value: Any) -> None:
        values = [value] if isinstance(value, str) else list(value)
        prop.fset(self, [own(address, v) for v in values])

    setter.modeldrop = True  # type: ignore[attr-defined]
    hc.Config.bind = property(prop.fget, setter)


def _patch_interfaces(address: str) -> None:
    import psutil

    original = psutil.net_if_addrs
    if getattr(original, "modeldrop", False):
        return

    def net_if_addrs() -> dict[str, list[Any]]:
        # loopback aliases (127.0.x.y) are routed, not listed: the node's interface is its address alone
        addrs = [a for name_addrs in original().values() for a in name_addrs]
        make = type(addrs[0]) if addrs else None
        if make is None or not hasattr(make, "_fields"):
            return {}
        return {"lo": [make(socket.AF_INET, address, "255.0.0.0", None, None)]}

    net_if_addrs.modeldrop = True  # type: ignore[attr-defined]
    psutil.net_if_addrs = net_if_addrs


def _patch_ring_hostfile(address: str) -> None:
    try:
        import mlx.core as mx
    except ImportError:
        return
    original = mx.distributed.init
    if getattr(original, "modeldrop", False):
        return

    def init(*args: Any, **kwargs: Any) -> Any:
        path = os.environ.get("MLX_HOSTFILE")
        if path and os.path.isfile(path):
            with open(path) as f:
                hosts = json.load(f)
            if isinstance(hosts, list) and all(isinstance(h, str) for h in hosts):
                with open(path, "w") as f:
                    json.dump([own(address, h) for h in hosts], f)
        # MLX's ring init blocks holding the GIL; the runner's RunnerConnecting status (sent just before, by a
        # multiprocessing feeder thread) would never leave, and the other rank waits for it. Let it go first.
        time.sleep(PRE_INIT_PAUSE_S)
        return original(*args, **kwargs)

    init.modeldrop = True  # type: ignore[attr-defined]
    mx.distributed.init = init


def unreachable(address: Any) -> bool:
    """Is this socket address one the node's cabling does not reach (`MODELDROP_EXO_UNREACHABLE`)?"""
    blocked = os.environ.get(UNREACHABLE_ENV)
    return bool(blocked) and isinstance(address, tuple) and bool(address) and address[0] in blocked.split(",")


def _patch_connect() -> None:
    cls = socket.socket
    if getattr(cls.connect, "modeldrop", False):
        return
    original, original_ex = cls.connect, cls.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if unreachable(address):
            raise OSError(errno.EHOSTUNREACH, f"{os.strerror(errno.EHOSTUNREACH)} (sandbox cabling)")
        return original(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        return errno.EHOSTUNREACH if unreachable(address) else original_ex(self, address)

    connect.modeldrop = connect_ex.modeldrop = True  # type: ignore[attr-defined]
    cls.connect, cls.connect_ex = connect, connect_ex  # type: ignore[method-assign]


def load_faults(path: str) -> None:
    """Export the fault switches of `path` (see the module docstring); a missing file means none."""
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = {}
    faults = config.get("faults") or {}
    os.environ[UNREACHABLE_ENV] = ",".join(config.get("unreachable") or [])
    for key, var in (("namespace", "MODELDROP_EXO_FAULT_NAMESPACE"),
                     ("runner_sigkill_s", "MODELDROP_EXO_FAULT_RUNNER_KILL_S")):
        if faults.get(key) is not None:
            os.environ[var] = str(faults[key])
        else:
            os.environ.pop(var, None)


def _runner_self_kill() -> None:
    """In a runner process with the fault set: SIGKILL self after the delay."""
    import signal
    import threading

    delay = os.environ.get("MODELDROP_EXO_FAULT_RUNNER_KILL_S")
    if not delay:
        return
    timer = threading.Timer(float(delay), os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()


def apply(runner: bool = False) -> None:
    """Install the patches for `$MODELDROP_EXO_NODE_ADDRESS` (no-op when unset); `runner`: this is
    a runner process (the entry point re-imported as `__mp_main__`), where a runner fault may act."""
    address = os.environ.get(ADDRESS_ENV)
    if not address:
        return
    _patch_bind(address)
    _patch_interfaces(address)
    _patch_ring_hostfile(address)
    _patch_connect()
    if runner:
        _runner_self_kill()

"""The modeldrop sandbox: a local cluster made of real parts that stands in for the Macs.

- `sandbox.model`   the tiny random-weight Llama (`generate_model`, MODEL_ID)
- `sandbox.hub`     a fake Hugging Face hub for the real `hf` CLI, with fault switches
- `sandbox.cluster` `Sandbox`: SSH nodes on loopback, the hub, the env file for the suite, built from
  `layout` (names and paths), `users` (users and sshd), `nodes` (node files and processes),
  `exo_install` (each node's `exo`: the emulator or real EXO) and `hub_model` (the model on the hub)
- `sandbox.exo_emulator`  the EXO emulator (installed as each node's exo); `sandbox.exo_real` real EXO

`python -m sandbox up|down|status|env` drives it from a shell. Names below are imported lazily
so that `python -m sandbox.hub` starts without numpy.
"""

from __future__ import annotations

from typing import Any

# a sandbox slot S puts its nodes on 127.0.<10+S>.x: 0..MAX_SLOT
MAX_SLOT = 239

__all__ = ["MAX_SLOT", "MODEL_ID", "Sandbox", "SandboxError", "generate_model", "HubHandle", "start_hub", "stop_hub"]

_WHERE = {"MODEL_ID": "sandbox.model", "generate_model": "sandbox.model", "Sandbox": "sandbox.cluster",
          "SandboxError": "sandbox.layout", "HubHandle": "sandbox.hub", "start_hub": "sandbox.hub",
          "stop_hub": "sandbox.hub"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")

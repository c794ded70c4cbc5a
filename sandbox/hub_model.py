"""The sandbox's model on its hub: generated once per parameters, published, served, downloaded once.

Contract: `ensure_model(lay, params)` returns the tiny model's info, regenerating `<root>/model` only when
its parameters changed; `ensure_hub(lay)` publishes it (and `serving_repos`' no-go repos) to `<root>/hub/repos`,
starts (or reuses) the hub on the slot's address with no fault switch set, and names the slot in the error when
the port is taken;
`ensure_reference_download(lay)` keeps `<root>/reference/<model>` a complete `hf download` of the hub's
current commit (for populate_model). `hub_handle(lay)` drives the hub whether or not this process
started it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from sandbox.hub import HubHandle, publish, start_hub
from sandbox.layout import Layout, SandboxError, write_file
from sandbox.model import generate_model
from sandbox.procs import read_pid
from sandbox.serving_repos import publish_serving_repos


def hub_handle(lay: Layout) -> HubHandle:
    """The hub handle (works whether or not this process started it)."""
    hdir = lay.hub_dir
    return HubHandle(lay.hub_host, lay.hub_port, read_pid(hdir / "hub.pid"), hdir / "hub.pid",
                     hdir / "requests.jsonl")


def ensure_model(lay: Layout, model_params: dict[str, Any]) -> dict[str, Any]:
    """The tiny model's info; `<root>/model` regenerated only when its parameters changed."""
    mdir = lay.root / "model"
    stamp = lay.root / "model.json"
    params = {"model_id": lay.model_id, **model_params}
    try:
        old = json.loads(stamp.read_text())
    except (FileNotFoundError, ValueError):
        old = None
    if old and old.get("params") == params:
        return old["info"]
    shutil.rmtree(mdir, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    info = generate_model(mdir, **params)
    write_file(stamp, json.dumps({"params": params, "info": info}, indent=1))
    return info


def ensure_hub(lay: Layout) -> None:
    """Publish the model and start (or reuse) the hub, its fault switches cleared."""
    hdir = lay.hub_dir
    publish(hdir / "repos", lay.model_id, lay.root / "model")
    publish_serving_repos(hdir / "repos", lay.root / "model", lay.root / "serving-repos")
    try:
        h = start_hub(hdir / "repos", lay.hub_host, lay.hub_port, hdir / "requests.jsonl", hdir / "hub.pid")
    except (RuntimeError, TimeoutError) as e:
        raise SandboxError(f"the hub could not start on {lay.hub_host}:{lay.hub_port} (is slot {lay.slot} "
                           f"used by another sandbox root? see `python -m sandbox status --slot "
                           f"{lay.slot}`): {e}") from None
    h.clear_faults()


def ensure_reference_download(lay: Layout) -> None:
    """A complete `hf download` of the current commit, for populate_model()."""
    hub = hub_handle(lay)
    commit = hub.commit(lay.model_id)
    ref = lay.reference_dir
    if (ref / ".cache/huggingface/trees" / f"{commit}.json").exists():
        return
    shutil.rmtree(ref, ignore_errors=True)
    hf = Path(sys.executable).parent / "hf"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(lay.root / "reference" / ".hfhome"),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    r = subprocess.run([str(hf), "download", lay.model_id, "--local-dir", str(ref)], env=env,
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SandboxError(f"reference download failed (rc {r.returncode}): {r.stderr[-1500:]}")

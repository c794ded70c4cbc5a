"""Print the real-EXO sandbox's figures: `python -m scripts.measure_real_exo [--slot S] [--skip-runs]`.

Contract: prints one line per figure, each measured here and now (nothing hard-coded):
- the install's first build (from its marker) and a cached check;
- wall time of `pytest gates/ --sandbox --teardown` on real EXO and on the emulator (unless --skip-runs);
- on a 2-node real-EXO cluster it starts itself: `POST /instance` to every runner Ready, then chat
  tok/s through EXO's API against mlx-lm's own `stream_generate` on the same model files and the
  same number of tokens (greedy, the installs' own MLX).
Uses the slot's sandbox root (MODELDROP_SANDBOX_SLOT, default 0) and stops what it started.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from sandbox.exo_real.install import build_seconds, ensure_install

REPO = Path(__file__).resolve().parents[2]
TOKENS = 64
PROMPT = "Count the colours of the rainbow and then describe each one."


def _http(url: str, body: dict[str, Any] | None = None, timeout: float = 120) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def _poll(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as e:
            last = e
        if last and not isinstance(last, OSError):
            return last
        time.sleep(0.25)
    raise SystemExit(f"measure: timed out waiting for {what}; last seen {last!r}")


def gates_wall(exo: str, slot: int) -> float:
    """Seconds for `pytest gates/ --sandbox --sandbox-exo <exo> --teardown` (must pass)."""
    env = {**os.environ, "MODELDROP_SANDBOX_SLOT": str(slot)}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "gates/", "--sandbox", "--sandbox-exo", exo, "--teardown",
                        "-q", "-p", "no:cacheprovider"], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"measure: gates on {exo} failed (rc {r.returncode}):\n{r.stdout[-2000:]}")
    return wall


def _runners_ready(api: str, n: int) -> bool:
    runners = _http(f"{api}/state").get("runners") or {}
    return len(runners) >= n and all("RunnerReady" in r for r in runners.values())


def cluster_figures(sbx: Any) -> tuple[float, float]:
    """(POST /instance -> all runners Ready, tokens/s of a non-stream chat) on a 2-node real-EXO cluster."""
    api = f"http://{sbx.address(1)}:52415"
    procs = [subprocess.Popen(sbx.ssh_argv(k, [str(sbx.node(k).exo_cmd), "--namespace", "measure", "--offline"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for k in (1, 2)]
    try:
        _poll(lambda: len(_http(f"{api}/state")["topology"]["connections"]) >= 2, 180, "both topology edges")
        _poll(lambda: _http(f"{api}/v1/models?status=downloaded")["data"], 180, "the model listed as downloaded")
        place = _http(f"{api}/instance/placement?model_id={sbx.model_id}&min_nodes=2")
        t0 = time.monotonic()
        _http(f"{api}/instance", {"instance": place})
        _poll(lambda: _runners_ready(api, 2), 300, "every runner Ready")
        ready = time.monotonic() - t0
        body = {"model": sbx.model_id, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": TOKENS,
                "temperature": 0}
        _http(f"{api}/v1/chat/completions", body)  # warm
        t1 = time.monotonic()
        out = _http(f"{api}/v1/chat/completions", body)
        return ready, out["usage"]["completion_tokens"] / (time.monotonic() - t1)
    finally:
        for k in (1, 2):
            sbx.stop_node_processes(k)
        for p in procs:
            p.wait(timeout=30)


MLX_LM_PROG = """
import sys, time
from mlx_lm import load, stream_generate
from mlx_lm.sample_utils import make_sampler
model, tok = load(sys.argv[1])
prompt = tok.apply_chat_template([{"role": "user", "content": sys.argv[2]}], add_generation_prompt=True)
for _ in stream_generate(model, tok, prompt, max_tokens=8, sampler=make_sampler(0.0)):
    pass
t0, n = time.monotonic(), 0
for r in stream_generate(model, tok, prompt, max_tokens=int(sys.argv[3]), sampler=make_sampler(0.0)):
    n = r.generation_tokens
print(n / (time.monotonic() - t0))
"""


def mlx_lm_tps(sbx: Any) -> float:
    """Tokens/s of mlx-lm itself on the reference download, in the real-EXO install's Python."""
    inst = ensure_install("new")
    ref = sbx.root / "reference" / sbx.model_id.replace("/", "--")
    r = subprocess.run([str(inst.python), "-c", MLX_LM_PROG, str(ref), PROMPT, str(TOKENS)],
                       env={**os.environ, **inst.env}, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"measure: mlx-lm run failed: {r.stderr[-1500:]}")
    return float(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.measure_real_exo")
    ap.add_argument("--slot", type=int, default=int(os.environ.get("MODELDROP_SANDBOX_SLOT", "0")))
    ap.add_argument("--skip-runs", action="store_true", help="skip the two whole gate runs")
    a = ap.parse_args(argv)
    print(f"real-EXO install first build: {build_seconds('new') or 'not recorded'} s")
    t0 = time.monotonic()
    ensure_install("new")
    print(f"real-EXO install cached check: {time.monotonic() - t0:.2f} s")
    from sandbox.cluster import Sandbox, default_root
    sbx = Sandbox(default_root(a.slot), a.slot, 2, exo="real")
    t0 = time.monotonic()
    sbx.up()
    print(f"sandbox up (real EXO, cached): {time.monotonic() - t0:.1f} s")
    if not a.skip_runs:
        for exo in ("real", "emulator"):
            print(f"pytest gates/ --sandbox --sandbox-exo {exo}: {gates_wall(exo, a.slot):.1f} s wall")
        sbx.up()
    ready, tps = cluster_figures(sbx)
    print(f"POST /instance -> all runners Ready (2 nodes, real EXO): {ready:.1f} s")
    print(f"chat through real EXO (2-node ring, {TOKENS} tokens, non-stream): {tps:.1f} tok/s")
    print(f"mlx-lm directly (same model, {TOKENS} tokens): {mlx_lm_tps(sbx):.1f} tok/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

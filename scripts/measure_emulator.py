"""Measure the EXO emulator with exo's default timing: ``python -m scripts.measure_emulator`` (repo root).

Prints the time from start to a 2-node cluster in /state, from POST /instance to all runners Ready,
chat tok/s through the emulator vs mlx-lm's ``stream_generate`` on the same files (ratio), and RSS per
node (emulator and its child processes: the runner and multiprocessing's resource tracker).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from sandbox import emulator_driver as f
from sandbox.model import generate_model

ADDRS = ["127.91.0.11", "127.91.0.12"]
MSGS = [{"role": "user", "content": "hello there"}]
N_TOKENS = 256


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return 0


def children(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = Path(f"/proc/{p}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(p))
    return out


def cluster_times(nodes: list[f.EmuNode]) -> None:
    t0 = time.monotonic()
    for n in nodes:
        n.start()
    for n in nodes:
        n.node_id()
    t_api = time.monotonic() - t0

    def members() -> bool:
        s = nodes[0].state()
        return len(s["nodeIdentities"]) == 2 and len(s["nodeMemory"]) == 2

    f.wait_for(members, 60, "members", 0.05)
    t_members = time.monotonic() - t0
    f.wait_cluster(nodes, 60)
    print(f"start -> both /node_id answer: {t_api:.2f}s; -> 2 nodes in nodeIdentities+nodeMemory: "
          f"{t_members:.2f}s; -> bidirectional edges (placeable): {time.monotonic() - t0:.2f}s")


def ready_time(node: f.EmuNode) -> None:
    code, inst = node.get(f"/instance/placement?model_id={f.MODEL_ID}&min_nodes=2")
    assert code == 200, inst
    t1 = time.monotonic()
    node.post("/instance", {"instance": inst})
    f.wait_ready(node, f.instance_body(inst)["instanceId"], 120)
    print(f"POST /instance -> all runners Ready (2-node ring): {time.monotonic() - t1:.2f}s")


def emulator_rates(node: f.EmuNode) -> tuple[float, float]:
    node.post("/bench/chat/completions", {"model": f.MODEL_ID, "messages": MSGS, "max_tokens": 16})
    walls, server = [], []
    for _ in range(5):
        t = time.monotonic()
        _, r = node.post("/bench/chat/completions", {"model": f.MODEL_ID, "messages": MSGS, "max_tokens": N_TOKENS})
        walls.append(N_TOKENS / (time.monotonic() - t))
        server.append(r["generation_stats"]["generation_tps"])
    return statistics.median(walls), statistics.median(server)


def direct_rates(model_dir: Path) -> tuple[float, float]:
    from mlx_lm import load, stream_generate

    model, tok = load(str(model_dir))
    prompt = tok.apply_chat_template(MSGS, add_generation_prompt=True)
    list(stream_generate(model, tok, prompt, max_tokens=16))
    walls, server = [], []
    for _ in range(5):
        t = time.monotonic()
        resp = list(stream_generate(model, tok, prompt, max_tokens=N_TOKENS))[-1]
        walls.append(resp.generation_tokens / (time.monotonic() - t))
        server.append(resp.generation_tps)
    return statistics.median(walls), statistics.median(server)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="emu-measure-"))
    model = root / "model"
    generate_model(model, layers=4, hidden=64, vocab=2048, shards=3, eos="never")
    nodes = [f.EmuNode(root, f"node{i + 1}", ADDRS[i], ADDRS, timing={}, layout="linux") for i in range(2)]
    try:
        for n in nodes:
            n.stage_model(model)
        cluster_times(nodes)
        ready_time(nodes[0])
        direct = direct_rates(nodes[0].data_home / "models" / f.MODEL_ID.replace("/", "--"))
        print(f"direct stream_generate: {N_TOKENS}/wall median {direct[0]:.0f} tok/s, "
              f"generation_tps median {direct[1]:.0f}")
        for n in nodes:
            wall, server = emulator_rates(n)
            print(f"emulator via {n.name}: client {N_TOKENS}/wall median {wall:.0f} tok/s, server generation_tps "
                  f"median {server:.0f}; ratio to direct: wall {wall / direct[0]:.2f}, tps {server / direct[1]:.2f}")
        for n in nodes:
            assert n.proc is not None
            kids = [rss_mib(k) for k in children(n.proc.pid)]
            print(f"RSS {n.name}: emulator {rss_mib(n.proc.pid)} MiB, children {kids} MiB")
    finally:
        for n in nodes:
            n.stop()


if __name__ == "__main__":
    main()

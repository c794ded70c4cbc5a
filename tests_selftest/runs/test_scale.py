"""Whole runs at the size the suite promises, on the EXO emulator: four nodes (a full mesh through chat and every
benchmark module, four Macs on a Thunderbolt ring, the ring with one cable out) and three of the four (`--nodes`,
gates and every benchmark module in one run); three on real EXO (gates and benchmarks); and the faults at scale,
each caught at its gate naming node 3 or 4: one node of four isolated, node 4's download incomplete, a runner
killed on node 3, node 4's exo killed mid-chat.

The four-node emulator sandbox is one per xdist worker (its slot for the role "four"), shared by
the module: its file gates run once (`four_files`: preflight, every node's download and verify, the canary,
parity) and leave the pass cache every other four-node run reuses with `--resume-bootstrap` (each starts EXO
afresh), so a run costs its own EXO gates only. The three-node emulator run uses the same sandbox with nodes 1-3
and a report dir of its own (its file gates run again: a three-node preflight is not the four-node one). The
three-node real-EXO sandbox is the worker's slot for "three". The benchmark runs use the short profile cut to one
case per phase shape (`SHORT_BENCH`): one sweep case, thinking on and off, every task, concurrency 4 (3 on three
nodes), each measured once.
Four nodes on real EXO cost four to six minutes on two shared cores: README's "Four Macs" command, measured for
the closing note, not a self-test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from modeldrop.bench.tasks import TASKS
from modeldrop.gatetable import gate_order
from sandbox import Sandbox
from sandbox.exo_real.install import missing_inputs
from tests_selftest.support.cluster_runs import (
    file_gates,
    launch_records,
    quick_edges,
    resume_dir,
    run_acting,
    run_file_gates,
    signature_ids,
    stop_leftovers,
    wait_gone,
)
from tests_selftest.support.runs import RunResult, later_gates_not_run, run_suite
from tests_selftest.support.slots import SANDBOX_BASE, slot

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(900)]
WINDOWS = ["--cluster-window", "10", "--settle-window", "2", "--ready-timeout", "90"]
# every benchmark module at its cheapest: one sweep case (64 x 16 tokens), thinking on and off, every task, one
# concurrency level (the node count: one thread through each API), each measured once
SHORT_BENCH = ["--bench-profile", "short", "--bench-repeat", "1", "--bench-prompt-lens", "64",
               "--bench-output-lens", "16"]


@pytest.fixture(scope="module")
def four():
    """A four-node emulator sandbox (a full mesh unless a test recables it)."""
    s = slot("four")
    box = Sandbox(root=SANDBOX_BASE / f"scale-slot{s}", slot=s, n_nodes=4)
    box.up()
    yield box
    box.down()


def settle(box) -> None:
    """Every node user's process stopped, faults cleared, the mesh cabled again (up() puts cables back)."""
    for k in range(1, box.n_nodes + 1):
        box.stop_node_processes(k)
        box.set_exo_faults(k, {})
    box.set_cabling("mesh")
    box.up()


@pytest.fixture(scope="module")
def four_files(four, tmp_path_factory) -> RunResult:
    """The four nodes' file gates and canary, once (its report dir's pass cache serves the module's runs)."""
    run = run_file_gates(four, tmp_path_factory.mktemp("scale") / "reports", *WINDOWS)
    settle(four)
    return run


@pytest.fixture
def box4(four, four_files):
    """The four-node sandbox probing edges every 2 s (`quick_edges`; the cluster window, not that period, bounds the
    cluster cases), settled again after the test; the report dir holding the file gates' passes."""
    assert four_files.rc == 0, ({g: four_files.outcome(g) for g in gate_order(4)}, four_files.output[-3000:])
    quick_edges(four)
    yield four, four_files.report_dir
    settle(four)


def resumed(box, reports: Path, *args: str) -> RunResult:
    """`pytest gates/` on the four nodes reusing the green run's file passes (EXO started afresh)."""
    return run_suite(["gates/"], Path(box.env_file), reports, *WINDOWS, "--resume-bootstrap", *args, timeout=600)


def ledger(r: RunResult) -> list[dict]:
    return [json.loads(x) for x in (r.run_folder() / "ledger.jsonl").read_text().splitlines()]


def note(r: RunResult, gate: str, key: str):
    return next((e["value"] for e in ledger(r) if e.get("event") == "note" and e.get("gate") == gate
                 and e.get("key") == key), None)


def caught(r: RunResult, gate: str, sig: str, *needles: str) -> None:
    """Failed at `gate` with signature `sig` and each needle in its message; nothing later ran or was left."""
    order = gate_order(4)
    try:
        assert r.outcome(gate) == "failed", ({g: r.outcome(g) for g in order}, r.output[-3000:])
        assert later_gates_not_run(r, gate, order) == []
        assert sig in signature_ids(r, gate), (signature_ids(r, gate), r.message(gate)[:600])
        for needle in needles:
            assert needle in r.message(gate), (needle, r.message(gate)[:800])
        assert wait_gone(launch_records(r)) == [], "processes left behind after a failed run"
    finally:
        stop_leftovers(launch_records(r))


def benchmarks_green(r: RunResult, n: int) -> None:
    """Every case of every benchmark module passed and was measured in this run (its case JSON in bench/, not a
    reused checkpoint, no request errors; its row in run.json), and the concurrency case sent one thread through
    each of the n nodes' APIs: its figures per node in the case JSON and in the run summary's benchmark table."""
    want = {"token_sweep-pp64-tg16", "thinking-on", "thinking-off", f"concurrency-c{n}",
            *(f"tasks-{t.name}" for t in TASKS)}
    run = json.loads((r.run_folder() / "run.json").read_text())
    outcomes = {item.partition("[")[2].rstrip("]"): v["outcome"] for item, v in run["bench"].items()}
    assert outcomes == dict.fromkeys(want, "passed"), outcomes
    assert {row["case"] for row in run["benchmarks"]} == want, run["benchmarks"]
    cases = {p.stem: json.loads(p.read_text()) for p in (r.run_folder() / "bench").glob("*.json")}
    assert set(cases) == want, sorted(cases)
    for case_id, case in cases.items():
        s = case["summary"]
        assert case["reused_from"] is None and s["requests"] >= 1 and s["errors"] == 0, (case_id, s)
    summary = cases[f"concurrency-c{n}"]["summary"]
    nodes = [f"node{k}" for k in range(1, n + 1)]
    per = summary["per_node"]
    assert sorted(per) == nodes, per
    assert all(p["requests"] == 1 and p["errors"] == 0 and p["output_tokens"] > 0 for p in per.values()), per
    assert sorted(summary["node_urls"]) == nodes and len(set(summary["node_urls"].values())) == n, summary
    table = r.output[r.output.index("benchmarks ("):]
    for node in nodes:  # the latency table's row of each node: 1 thread, 1 request, 0 errors
        assert re.search(rf"^ +{node} \(1 thread\) +- +1 +0 ", table, re.M), (node, table[:3000])


# -- green ------------------------------------------------------------------------------------------
def test_four_nodes_green_through_chat_and_the_benchmarks(box4, four_files):
    """Every gate of four nodes passes (downloads and verify of nodes 2-4 and the canary in the module's file run;
    then placement over min_nodes=4, the ring's every neighbour, chat through every API at once), and then every
    benchmark module in the same run: a sweep case, thinking on and off, every task, and the concurrency case
    spread over the four APIs with each node's figures."""
    box, reports = box4
    order = gate_order(4)
    files = file_gates(order)
    assert all(four_files.outcome(g) == "passed" for g in files), {g: four_files.outcome(g) for g in files}
    r = run_suite(["gates/", "benchmarks/"], Path(box.env_file), reports, *WINDOWS, *SHORT_BENCH,
                  "--bench-concurrency", "4", "--resume-bootstrap", timeout=600)
    try:
        assert r.rc == 0, r.output[-4000:]
        assert all(r.outcome(g) == "passed" for g in order[len(files):]), {g: r.outcome(g) for g in order}
        assert sorted(note(r, "placement", "ranks").split(" → ")) == ["node1", "node2", "node3", "node4"]
        chat = note(r, "chat", "chat_latency_s")
        assert len(chat) == 8, chat  # streamed and not, through each of the four APIs
        benchmarks_green(r, 4)
    finally:
        stop_leftovers(launch_records(r))


def test_three_nodes_on_the_emulator_green_through_the_benchmarks(four, tmp_path):
    """Three of the four nodes (`--nodes`, a report dir of its own): every gate of three nodes passes in one run
    with every benchmark module after it, EXO ranks exactly those three, chat answers through their three APIs,
    the concurrency case spreads over them, and node 4 is left alone (no exo of this run launched on it)."""
    nodes = ",".join(four.alias(k) for k in (1, 2, 3))
    r = run_suite(["gates/", "benchmarks/"], Path(four.env_file), tmp_path / "reports", *WINDOWS, *SHORT_BENCH,
                  "--bench-concurrency", "3", "--nodes", nodes, timeout=600)
    try:
        order = gate_order(3)
        assert r.rc == 0, ({g: r.outcome(g) for g in order}, r.output[-4000:])
        assert all(r.outcome(g) == "passed" for g in order), {g: r.outcome(g) for g in order}
        assert {g.split("_")[0] for g in r.outcomes if g.startswith("node")} == {"node1", "node2", "node3"}, r.outcomes
        assert sorted(note(r, "placement", "ranks").split(" → ")) == ["node1", "node2", "node3"]
        chat = note(r, "chat", "chat_latency_s")
        assert len(chat) == 6, chat  # streamed and not, through each of the three APIs
        benchmarks_green(r, 3)
        assert sorted({rec["node"] for rec in launch_records(r)}) == [1, 2, 3], launch_records(r)
    finally:
        stop_leftovers(launch_records(r))
        settle(four)


def test_four_macs_on_a_thunderbolt_ring_are_green(box4):
    """Each node reaches only its two neighbours: the cluster gate passes on the ring (the diagonals noted, not
    failed), EXO ranks the nodes around it, and the transport gate finds every neighbour."""
    box, reports = box4
    box.set_cabling("ring")
    r = resumed(box, reports)
    assert r.rc == 0 and r.outcome("chat") == "passed", ({g: r.outcome(g) for g in gate_order(4)}, r.output[-3000:])
    assert note(r, "cluster", "links not needed") == [
        f"no link node{a}–node{b} (not needed: a ring runs node1 → node2 → node3 → node4 → node1)"
        for a, b in ((1, 3), (2, 4))]
    ranks = note(r, "placement", "ranks").split(" → ")
    assert all(abs(int(a[4:]) - int(b[4:])) in (1, 3) for a, b in zip(ranks, ranks[1:] + ranks[:1], strict=True)), \
        ranks  # rank neighbours are cable neighbours
    stop_leftovers(launch_records(r))


@pytest.mark.fault("ring-cable-out", gate="cluster", signature="X-NO-RING", since="startup", window="--cluster-window")
def test_a_ring_with_one_cable_out_is_caught_at_cluster(box4):
    """Cable 4-1 out: a path, not a cycle. The cluster gate fails once its window is over, naming the missing
    link by node name (X-NO-RING), not as an isolation."""
    box, reports = box4
    box.set_cabling("ring", cut=[(4, 1)])
    r = resumed(box, reports)
    caught(r, "cluster", "X-NO-RING", "missing link that would close it: node1–node4")
    assert signature_ids(r, "cluster")[0] == "X-NO-RING", signature_ids(r, "cluster")


# -- faults at scale --------------------------------------------------------------------------------
@pytest.mark.fault("isolated-node3-of-4", gate="cluster", signature="A1", since="startup", window="--cluster-window")
def test_one_node_of_four_isolated_is_caught_at_cluster(box4):
    box, reports = box4
    box.set_exo_faults(3, {"isolated": True})
    caught(resumed(box, reports), "cluster", "A1", "node3 sees 1/4 nodes")


@pytest.mark.fault("download-incomplete-node4-of-4", gate="node4_verify", signature="truncated")
def test_node4_download_incomplete_is_caught_at_its_verify(box4):
    """Node 4's second shard holds half its bytes under its own name (a download cut short, its mtime kept so hf's
    fast path leaves it): node 4's verify fails naming node 4 and the shard; nodes 1-3 stay verified."""
    box, reports = box4
    shard = sorted(box.node(4).model_dir.glob("*.safetensors"))[1]
    st = shard.stat()
    shard.write_bytes(shard.read_bytes()[: st.st_size // 2])
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    try:
        r = resumed(box, reports)
        order = gate_order(4)
        assert r.outcome("node4_verify") == "failed", ({g: r.outcome(g) for g in order}, r.output[-3000:])
        assert all(r.outcome(f"node{k}_verify") in ("passed", "skipped") for k in (1, 2, 3))
        message = r.message("node4_verify")
        assert "node4 (" in message and "truncated" in message and shard.name in message, message[:600]
        assert later_gates_not_run(r, "node4_verify", order) == []
    finally:
        box.populate_model(4)


@pytest.mark.fault("runner-killed-node3-of-4", gate="placement", signature="X-RUNNER-SIGNAL", since="startup",
                   window="--ready-timeout")
def test_a_runner_killed_on_node3_is_caught_at_placement(box4):
    box, reports = box4
    box.set_exo_faults(3, {"runner_killed_signal": 9})
    caught(resumed(box, reports), "placement", "X-RUNNER-SIGNAL", "on node3 (", "sbx-node3 (node ")


def api_connected(address: str, port: int) -> bool:
    """Is a TCP connection to address:port ESTABLISHED on this host (/proc/net/tcp)?"""
    want = f"{''.join(f'{int(x):02X}' for x in reversed(address.split('.')))}:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == want and fields[3] == "01":
            return True
    return False


@pytest.mark.fault("exo-killed-mid-chat-node4-of-4", gate="chat", signature="X-EXO-GONE", since="chat")
def test_node4_exo_killed_mid_chat_is_caught_at_chat(box4, four_files, fault_row, tmp_path):
    """Node 4's API holds its streamed answer open (emulator `stall_mid_stream`), so the chat gate's request through
    it is in flight until node 4's exo is SIGKILLed: the chat gate fails naming node 4's dead exo first."""
    box, _ = box4
    box.set_exo_faults(4, {"stall_mid_stream": 2})
    seen: dict = {}
    mine = resume_dir(four_files, tmp_path)  # a report dir of its own (run_with watches its newest ledger)

    def kill_node4() -> None:  # once a request through node 4's API has been open for 0.3 s (not a /node_id probe)
        deadline, held = time.monotonic() + 60, 0
        while time.monotonic() < deadline and held < 6:
            held = held + 1 if api_connected(box.address(4), 52415) else 0
            time.sleep(0.05)
        if held < 6:
            seen["error"] = "no request through node 4's API within 60 s of the chat gate's start"
            return
        folder = max(mine.glob("*/ledger.jsonl"), key=lambda p: p.stat().st_mtime).parent
        rec = next(x for x in launch_records(folder) if x["node"] == 4 and x["role"] == "cluster")
        os.kill(rec["pid"], signal.SIGKILL)
        seen.update(pid=rec["pid"], killed=time.time())

    r = run_acting(box, tmp_path, ("gate_start", "chat"), kill_node4, *WINDOWS, "--resume-bootstrap")
    assert "error" not in seen, seen
    try:
        caught(r, "chat", "X-EXO-GONE", f"exo of node4 (pid {seen['pid']}) died")
        assert signature_ids(r, "chat")[0] == "X-EXO-GONE", signature_ids(r, "chat")
        fail = next(e for e in ledger(r) if e.get("event") == "fail" and e.get("gate") == "chat")
        fault_row.verdict_s = round(float(fail["t"]) - seen["killed"], 2)
    finally:
        stop_leftovers(launch_records(r))


# -- three nodes on real EXO ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_real():
    if missing_inputs("new"):
        pytest.skip("real EXO cannot be built here")
    s = slot("three")
    box = Sandbox(root=SANDBOX_BASE / f"real3-slot{s}", slot=s, n_nodes=3, exo="real")
    box.up()
    yield box
    box.down()


@pytest.mark.real_exo
def test_three_nodes_on_real_exo_green_through_the_benchmarks(three_real, tmp_path):
    """Real EXO on three nodes: every gate (a ring of three over min_nodes=3, chat through each API), a token-sweep
    case through the ring and the concurrency case spread over the three APIs (the other benchmark phases are the
    same code on one API, run by the two-node demo)."""
    real_windows = ["--cluster-window", "60", "--settle-window", "3", "--ready-timeout", "240"]
    bench = ["--bench-profile", "short", "--bench-concurrency", "3", "--bench-repeat", "1", "--bench-prompt-lens", "64",
             "--bench-output-lens", "16"]
    r = run_suite(["gates/", "benchmarks/test_token_sweep.py", "benchmarks/test_concurrency.py"],
                  Path(three_real.env_file), tmp_path / "reports", *real_windows, *bench, timeout=840)
    try:
        assert r.rc == 0, ({g: r.outcome(g) for g in gate_order(3)}, r.output[-4000:])
        assert sorted(note(r, "placement", "ranks").split(" → ")) == ["node1", "node2", "node3"]
        per = json.loads((r.run_folder() / "bench" / "concurrency-c3.json").read_text())["summary"]["per_node"]
        assert sorted(per) == ["node1", "node2", "node3"] and all(p["requests"] == 1 for p in per.values()), per
    finally:
        stop_leftovers(launch_records(r))


def test_a_node_listed_twice_stops_preflight_naming_both(four, tmp_path):
    """Node 1 by its alias and by a second alias of the same host and user (two targets, one Mac): preflight stops
    naming both. (The same target twice never gets that far: one usage line, test_plugin_config.py.)"""
    alias = four.alias(1)
    text = Path(four.ssh_config).read_text()
    block = text[text.index(f"Host {alias}\n"):].split("\n\n")[0]
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(text + "\n" + block.replace(f"Host {alias}", "Host twin-of-node1", 1) + "\n")
    r = run_suite(["gates/"], Path(four.env_file), tmp_path / "reports", "-k", "preflight", "--nodes",
                  f"{alias},twin-of-node1", timeout=300, extra_env={"SSH_CONFIG": str(ssh_config)})
    msg = r.message("preflight")
    assert r.outcome("preflight") == "failed" and r.rc == 1, (r.outcomes, r.output[-2000:])
    assert (f"node1 and node2 are the same node: {alias} and twin-of-node1 reach the same machine" in msg
            and f"and user ({four.node_user(1)})" in msg), msg[:800]

"""Whole runs of the EXO gates (1B, 4-6) against the sandbox: green for both generations, and each
emulator fault caught at its gate with the expected signature id, no later gate run, and no process
the run started left behind (every launch record's pid is gone, start time checked).

Windows are kept short with the run options (--cluster-window 8 --settle-window 3 --ready-timeout 60).

The file gates (preflight, both nodes' download and verify, the canary, parity) run once for the module
(`cluster_files`, in a report dir of its own: the sandbox is the session's), and every run here whose subject
lands at or after startup — most fault cases, the evidence-not-failure runs — reuses their passes with
`--resume-bootstrap` from a copy of that pass cache in its own report dir (EXO started afresh by each run),
asserting that they were reused. The runs about the file gates or the canary (the green runs, the card EXO
cannot add, the API port taken, the guide's env file) stay whole.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests_selftest.support.cluster_runs import (
    ORDER,
    WINDOWS,
    alive,
    assert_caught,
    file_gates,
    guide_env_for,
    launch_records,
    quick_edges,
    reset_nodes,
    resume_dir,
    reused_gates,
    run_file_gates,
    signature_ids,
    stop_leftovers,
    wait_gone,
)
from tests_selftest.support.runs import REPO, RunResult, later_gates_not_run, run_suite

pytestmark = [pytest.mark.sandbox_run, pytest.mark.timeout(900)]
FILE_GATES = file_gates(ORDER)


@pytest.fixture
def box(sbx):
    """The sandbox, EXO's edge probe every 2 s instead of 10 s (`quick_edges`), with faults and timing cleared
    after the test (up() clears them) and the NEW generation back. Each test checks itself that its run left
    nothing behind; stopping the node users' processes here only keeps one failing test from cascading into the
    next."""
    quick_edges(sbx)
    yield sbx
    sbx.set_exo_generation("new")
    reset_nodes(sbx)


def run(box, tmp_path: Path, *args: str, report: str = "reports") -> RunResult:
    return run_suite(["gates/"], Path(box.env_file), tmp_path / report, *WINDOWS, *args, timeout=600)


@pytest.fixture(scope="module")
def cluster_files(sbx, tmp_path_factory) -> RunResult:
    """The file gates and the canary on the sandbox, once for the module, in a report dir of its own (the
    sandbox is shared with other modules): its pass cache serves the module's resumed runs."""
    files = run_file_gates(sbx, tmp_path_factory.mktemp("cluster-files") / "reports", *WINDOWS)
    reset_nodes(sbx)
    return files


def resumed(box, files: RunResult, tmp_path: Path, *args: str) -> RunResult:
    """`pytest gates/ --resume-bootstrap` in a report dir of its own holding a copy of the module's pass cache:
    the file gates' passes reused, EXO started afresh (the caller checks the reuse with `assert_files_reused`)."""
    assert files.rc == 0 and all(files.outcome(g) == "passed" for g in FILE_GATES), (
        {g: files.outcome(g) for g in ORDER}, files.output[-3000:])
    resume_dir(files, tmp_path)
    return run(box, tmp_path, "--resume-bootstrap", *args)


def assert_files_reused(r: RunResult) -> None:
    """Every file gate's pass was reused (none ran again), so the run's gates ran from startup on."""
    assert reused_gates(r) == FILE_GATES, (reused_gates(r), {g: r.outcome(g) for g in ORDER})


def gate_times(r: RunResult, gate: str) -> tuple[float | None, float | None]:
    """(the gate's own duration, seconds from exo's start — the startup gate's start — to the gate's verdict)."""
    start_t, result = None, None
    for line in (r.run_folder() / "ledger.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event") == "gate_start" and ev.get("gate") == "startup":
            start_t = float(ev["t"])
        if ev.get("event") in ("pass", "fail") and ev.get("gate") == gate:
            result = ev
    if result is None:
        return None, None
    return float(result["duration_s"]), (float(result["t"]) - start_t) if start_t else None


def notes(r: RunResult, gate: str, key: str) -> list:
    """The values of the ledger notes `key` of `gate`."""
    evs = [json.loads(x) for x in (r.run_folder() / "ledger.jsonl").read_text().splitlines()]
    return [e.get("value") for e in evs if e.get("event") == "note" and e.get("gate") == gate and e.get("key") == key]


# -- green ----------------------------------------------------------------------------------------
def green_run(box, tmp_path: Path, generation: str) -> tuple[RunResult, list[dict]]:
    """A whole `pytest gates/` run on the `generation` checked green (`check_green`): it and its cluster's
    launch records (left serving)."""
    box.set_exo_generation(generation)
    t0 = time.monotonic()
    r = run(box, tmp_path)
    wall = time.monotonic() - t0
    try:
        cluster = check_green(r, generation)
    except BaseException:
        stop_leftovers(launch_records(r.run_folder()))
        raise
    print(f"\nMEASURE green {generation}: full `pytest gates/` wall {wall:.1f}s")
    return r, cluster


def test_green_run_old_generation(box, tmp_path):
    """Every gate green on the OLD generation; the canary stopped; the cluster left serving (no --teardown)."""
    r, cluster = green_run(box, tmp_path, "old")
    stop_leftovers(launch_records(r.run_folder()))
    assert wait_gone(cluster) == []


def test_green_run_then_benchmarks_by_url_a_k_rerun_that_reattaches_and_teardown(box, tmp_path):
    """Every gate green on the NEW generation, the cluster left serving; that cluster is then reused (a green run
    leaves it clean): `pytest benchmarks/ --exo-api <node URLs>` (no env file, a fresh report dir: no pass cache)
    benchmarks it with prompts of exactly the asked length by the server's count; `-k chat` re-attaches to it
    (same pids); --teardown stops it."""
    r, cluster = green_run(box, tmp_path, "new")
    try:
        urls = [x["api_url"] for x in sorted(cluster, key=lambda x: x["node"])]
        check_exo_api_benchmarks(box, tmp_path / "fresh", urls)
        r2 = run(box, tmp_path, "-k", "chat", "--teardown")
        assert r2.outcome("chat") == "passed", r2.output[-3000:]
        assert {x["pid"] for x in launch_records(r2)} == {x["pid"] for x in cluster}
        assert wait_gone(cluster) == []
    finally:
        stop_leftovers(launch_records(r.run_folder()))


def check_exo_api_benchmarks(box, report_dir: Path, urls: list[str]) -> None:
    """Benchmarks of an EXO already serving: the serving check's chat through each URL, then exact prompts."""
    cmd = [sys.executable, "-m", "pytest", "benchmarks/", "--exo-api", ",".join(urls), "--model", box.model_id,
           "--report-dir", str(report_dir), "--bench-profile", "short", "--bench-prompt-lens", "100",
           "--bench-output-lens", "8", "--bench-repeat", "2", "-k", "pp100 or concurrency-c2",
           "-p", "no:cacheprovider", "-q"]
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    print(f"\nMEASURE --exo-api benchmarks (serving check + 2 cases) wall {time.monotonic() - t0:.1f}s")
    assert res.returncode == 0 and "2 passed" in res.stdout, (res.stdout + res.stderr)[-4000:]
    run = report_dir / "latest"
    assert not (report_dir / "pass_cache.json").exists()
    checks = json.loads((run / "exo" / "serving_check.json").read_text())["checks"]
    assert [c["url"] for c in checks] == urls and all(c["completion_tokens"] for c in checks)
    for case in ("token_sweep-pp100-tg8", "concurrency-c2"):
        payload = json.loads((run / "bench" / f"{case}.json").read_text())
        prompt = payload["summary"]["prompt"]
        asked = payload["config"]["params"]["prompt_tokens"]  # 100 (sweep), the profile's 128 (concurrency)
        assert prompt["server_tokens"] == [asked] * payload["summary"]["requests"], (case, prompt)
        assert payload["warnings"] == [] and payload["summary"]["errors"] == 0, case


def check_green(r: RunResult, generation: str) -> list[dict]:
    assert r.rc == 0, r.output[-4000:]
    for g in ORDER:
        assert r.outcome(g) == "passed", (g, r.message(g))
    recs = launch_records(r)
    canary = [x for x in recs if x["role"] == "canary"]
    cluster = [x for x in recs if x["role"] == "cluster"]
    assert canary and not any(alive(x) for x in canary), "the canary is always stopped"
    assert len(cluster) == 2 and all(alive(x) for x in cluster), "a green run leaves the cluster serving"
    # the sandbox pre-installs no card: EXO meets the model as a new drop, the canary adds its card (recorded),
    # and every cluster node lists it before placement
    assert notes(r, "node1_canary", "model card") == ["EXO had no card for the model: added with POST /models/add"]
    assert notes(r, "cluster", "model card")[0].startswith("every node lists the model card")
    for x in cluster:
        assert ("--namespace" in x["argv"]) == (generation == "new")
        assert ("EXO_LIBP2P_NAMESPACE" in x["env"]) == (generation == "old")
        assert ("EXO_LIBP2P_NAMESPACE" in x["unset_env"]) == (generation == "new")
    return cluster


# -- faults caught at their gate ------------------------------------------------------------------
# The sandbox's timing knob shortens MLX's ring retry schedule (1, 2, 4, 8, 16 s) where the case is about the
# errno line, not the wait; a shorter --ready-timeout shortens the stall budget, a shorter --chat-stall-window
# the chat gate's stall window. The gates are unchanged.
FAST_RING = {"ring_retry_s": [0.2, 0.4, 0.8, 1.6, 3.2]}
WINDOW_OF = {"startup": "--settle-window", "cluster": "--cluster-window", "placement": "--ready-timeout",
             "chat": "--chat-timeout"}


def fault_case(name: str, k: int, faults: dict, gate: str, sig: str, timing: dict, extra: tuple,
               since: str | None = None, window: str | None = None):
    """One row of the fault matrix: the emulator fault `faults` on node k, caught at `gate` with `sig`; the
    fault's onset is exo's first start in the run unless `since` names the gate where it shows; the window that
    bounds its verdict is the gate's (WINDOW_OF) unless `window` names another run option."""
    since = since or ("node1_canary" if gate == "node1_canary" else "startup")
    mark = pytest.mark.fault(name.replace("_", "-"), gate=gate, signature=sig, since=since,
                             window=window or WINDOW_OF.get(gate))
    return pytest.param(name, k, faults, gate, sig, timing, extra, id=name, marks=mark)


FAULTS = [
    fault_case("isolated", 2, {"isolated": True}, "cluster", "SEED-OFFLINE-JOIN", {}, ()),  # joins offline: --online
    fault_case("namespace", 2, {"namespace": "someone-else"}, "cluster", "A1", {}, ()),
    fault_case("crash_at_start", 2, {"crash_at_start": True}, "startup", "X-EXIT", {}, ()),
    fault_case("crash_loop", 2, {"crash_loop": 1.0}, "startup", "X-RESTART", {}, ()),
    # the crash comes after every API answered, while the cluster-join watch already runs: the settle window
    # overlapping the join wait is still watched in full
    fault_case("crash_in_settle_window", 2, {"crash_loop": 9.0}, "startup", "X-RESTART", {}, ("--settle-window", "20")),
    fault_case("runner_never_ready", 2, {"runner_never_ready": "loading"}, "placement", "F2", {},
               ("--ready-timeout", "30")),
    fault_case("ring_connect_error_61", 2, {"ring_connect_error": 61}, "placement", "G2", FAST_RING, ()),
    # ETIMEDOUT: each of MLX's 5 connect attempts waits for the kernel's connect timeout, so the errno line comes
    # after the stall budget; what is observable by then is runners stuck Connecting (F1).
    fault_case("ring_connect_error_60", 2, {"ring_connect_error": 60}, "placement", "F1", {},
               ("--ready-timeout", "30")),
    fault_case("ring_connect_error_65", 2, {"ring_connect_error": 65}, "placement", "G2", FAST_RING, ()),
    # EXO cannot build a card for the model (POST /models/add answers 400): its own diagnosis, not dir drift (D6)
    fault_case("card_add_fails", 1, {"card_add_fails": True}, "node1_canary", "X-NO-CARD", {}, ()),
    # a runner killed from outside (the OOM killer) while loading on node 2: its own signature, the node named
    fault_case("runner_killed_signal", 2, {"runner_killed_signal": 9}, "placement", "X-RUNNER-SIGNAL", {}, ()),
    fault_case("chat_truncated_body", 1, {"chat_truncated_body": True}, "chat", "H2", {}, ()),
    fault_case("killed_mid_chat", 1, {"stream_error_chunk": True}, "chat", "H2", {}, ()),
    # node1's non-stream request stalls too, and the gate waits for every request: --chat-timeout bounds that one
    fault_case("stall_mid_stream", 1, {"stall_mid_stream": 2}, "chat", "H3", {},
               ("--chat-stall-window", "5", "--chat-timeout", "15"), window="--chat-stall-window"),
    # an API that answers one byte a second: each call ends at its total bound, the gate within its window plus
    # one call, with the endpoint named (never the gate's pytest-timeout)
    fault_case("trickling_exo_api", 2, {"api_trickle": ["/state"]}, "cluster",
               "no complete answer within 10s", {}, (), since="cluster"),
    fault_case("trickling_chat_body", 1, {"chat_trickle_body": True}, "chat", "no complete answer within 10s", {},
               ("--chat-timeout", "10"), since="chat"),
]


# node2's /state: the join watch's window (8 s) plus one sample (each /state call 10 s in all), counted from the
# startup gate's join watch; node1's non-stream chat: the stream before it plus --chat-timeout 10; then the logs
TRICKLE_BOUND_S = {"trickling_exo_api": 8 + 2 * 10 + 15, "trickling_chat_body": 5 + 10 + 15}


@pytest.fixture
def files_unless_before_startup(request) -> RunResult | None:
    """The module's file passes for a fault row whose onset (its `since`) is startup or later: its run resumes
    from them; None for one whose onset is earlier (the canary's): it runs whole."""
    since = request.node.get_closest_marker("fault").kwargs["since"]
    return request.getfixturevalue("cluster_files") if ORDER.index(since) >= ORDER.index("startup") else None


@pytest.mark.parametrize("name,k,faults,gate,sig,timing,extra", FAULTS)
def test_fault_caught_at_its_gate(box, files_unless_before_startup, tmp_path, name, k, faults, gate, sig, timing,
                                  extra):
    files = files_unless_before_startup
    box.set_exo_faults(k, faults)
    if timing:
        quick_edges(box, timing)
    t0 = time.monotonic()
    r = resumed(box, files, tmp_path, *extra) if files else run(box, tmp_path, *extra)
    own, since_exo = gate_times(r, gate)
    print(f"\nMEASURE {name}: {gate} failed after {own}s in the gate, {since_exo and round(since_exo, 1)}s after exo "
          f"started; run {time.monotonic() - t0:.1f}s{' (file gates reused)' if files else ''}; "
          f"{r.message(gate)[:300]}")
    try:
        if files:
            assert_files_reused(r)
        assert_caught(r, gate, sig)
        if name == "card_add_fails":
            assert "D6" not in signature_ids(r, gate) and "EXO has no model card" in r.message(gate), r.message(gate)
        if name == "runner_killed_signal":
            # the node as configured (name, target), then as EXO names it (friendly name, node id)
            assert f"on node{k} (" in r.message(gate) and f"sbx-node{k} (node " in r.message(gate), r.message(gate)
        if name in TRICKLE_BOUND_S:  # the window and the calls' total bounds, far below the gate's pytest-timeout
            assert own is not None and own < TRICKLE_BOUND_S[name], (own, r.message(gate))
    finally:
        stop_leftovers(launch_records(r))


@pytest.mark.fault("api-port-taken", gate="preflight", signature="API port 52415")
def test_foreign_listener_on_api_port_fails_preflight_and_is_not_killed(box, tmp_path):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((box.address(2), 52415))
    s.listen(1)
    try:
        r = run(box, tmp_path)
        assert r.outcome("preflight") == "failed" and "API port 52415" in r.message("preflight"), r.message("preflight")
        assert later_gates_not_run(r, "preflight", ORDER) == []
        s.getsockname()  # still ours: nobody killed the holder
    finally:
        s.close()


def test_state_runner_lag_is_evidence_not_a_failure(box, cluster_files, tmp_path):
    box.set_exo_faults(2, {"state_runner_lag": 30.0})
    r = resumed(box, cluster_files, tmp_path, "--teardown")
    try:
        assert_files_reused(r)
        assert r.outcome("chat") == "passed", r.output[-3000:]
        assert "SEED-MAP-LAG" in signature_ids(r, "chat")
        assert wait_gone(launch_records(r)) == []
    finally:
        stop_leftovers(launch_records(r))


def test_slow_tokens_pass_with_latency_recorded(box, cluster_files, tmp_path):
    box.set_exo_faults(1, {"token_rate": 20.0})
    r = resumed(box, cluster_files, tmp_path, "--teardown")
    try:
        assert_files_reused(r)
        assert r.outcome("chat") == "passed", r.output[-3000:]
        notes = [json.loads(x) for x in (r.run_folder() / "ledger.jsonl").read_text().splitlines()]
        assert any(n.get("key") == "chat_latency_s" for n in notes)
        assert wait_gone(launch_records(r)) == []
    finally:
        stop_leftovers(launch_records(r))


# -- the guide's own env file ---------------------------------------------------------------------


def test_guide_env_runs_green_and_chat_is_serving_truth_while_runner_maps_lag(box, tmp_path):
    """The guide's env block, pointed at the sandbox, runs every gate green; node 1's /state never shows the
    instance's runners (nodeToRunner {}), so placement passes on a working chat through every node, with the
    lag recorded as a warning and SEED-MAP-LAG; EXO_LIBP2P_PORT is said to be ignored on NEW."""
    box.set_exo_faults(1, {"state_runner_lag": 3600.0})
    env = guide_env_for(box, tmp_path)
    r = run_suite(["gates/"], env, tmp_path / "reports", *WINDOWS, "--teardown", timeout=600)
    try:
        for g in ORDER:
            assert r.outcome(g) == "passed", (g, r.message(g), r.output[-3000:])
        assert "SEED-MAP-LAG" in signature_ids(r, "placement")
        events = [json.loads(x) for x in (r.run_folder() / "ledger.jsonl").read_text().splitlines()]
        warnings = [str(e.get("value") or e.get("text")) for e in events if e.get("event") == "warning"]
        assert any("placement passed on a working chat" in w for w in warnings), warnings
        assert any(w.startswith("EXO_LIBP2P_PORT=51001 is ignored: NEW (zenoh)") for w in warnings), warnings
        assert all("my-cluster" in x["argv"] for x in launch_records(r) if x["role"] == "cluster")
    finally:
        stop_leftovers(launch_records(r.run_folder()))

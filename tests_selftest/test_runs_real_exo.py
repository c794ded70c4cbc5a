"""Whole runs of the gates against real EXO (EXO's own code, sandbox/exo_real) with real faults, each caught at
its gate with the expected signature id, no later gate run, and nothing the run started left behind.

One 2-node real-EXO sandbox per xdist worker (slot MODELDROP_SBXTEST_SLOT + 2 + worker), shared by the
module. Faults that must land between gates (a taken port, a missing shard, a node's EXO killed) are
injected by watching the run's own ledger for the gate event. Each case's gate can only fail after every
earlier gate passed on real EXO, so the cases also prove the setup (the green run itself is
`pytest gates/ benchmarks/ --sandbox`, measured by `python -m scripts.measure_real_exo`). Select them with `-m real_exo`; skipped
where real EXO cannot be built (no snapshot or no Python 3.13).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.exo_real.install import missing_inputs
from tests_selftest import runs
from tests_selftest.runs import REPO, RunResult, parse_junit
from tests_selftest.test_runs_cluster import (
    BASE,
    ORDER,
    alive,
    assert_caught,
    launch_records,
    signature_ids,
    stop_leftovers,
)

# Real EXO probes topology edges about every 10 s and loads on a busy CPU: windows wider than the emulator's.
WINDOWS = ["--cluster-window", "30", "--settle-window", "3", "--ready-timeout", "180"]
pytestmark = [pytest.mark.sandbox_run, pytest.mark.real_exo, pytest.mark.timeout(900),
              pytest.mark.skipif(bool(missing_inputs("new")), reason="real EXO cannot be built here")]


@pytest.fixture(scope="module")
def real(worker_id):
    """A 2-node sandbox running real EXO, its own slot per xdist worker."""
    from sandbox.cluster import Sandbox
    idx = int(worker_id[2:]) if worker_id.startswith("gw") else 0
    slot = int(os.environ.get("MODELDROP_SBXTEST_SLOT", "90")) + 2 + idx
    box = Sandbox(root=BASE / f"real-slot{slot}", slot=slot, n_nodes=2, exo="real")
    box.up()
    yield box
    box.down()


@pytest.fixture
def box(real):
    """The sandbox with faults cleared and node processes stopped after the test."""
    yield real
    for k in (1, 2):
        real.stop_node_processes(k)
        real.set_exo_faults(k, {})
    real.up()


def ledger_events(report_dir: Path) -> list[dict]:
    """The events of the newest run folder's ledger under `report_dir` (empty before it exists)."""
    ledgers = sorted(report_dir.glob("*/ledger.jsonl"), key=lambda p: p.stat().st_mtime)
    if not ledgers:
        return []
    out = []
    for line in ledgers[-1].read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


def run_with(box, tmp_path: Path, when: tuple[str, str] | None = None, act: Callable[[], None] | None = None,
             *args: str, timeout: float = 600) -> RunResult:
    """`pytest gates/` against the sandbox; `act()` runs once, as soon as the ledger shows event `when`
    = (event, gate), e.g. ("pass", "preflight")."""
    report = tmp_path / "reports"
    report.mkdir(parents=True, exist_ok=True)
    junit = report / "junit-0.xml"
    cmd = [sys.executable, "-m", "pytest", "gates/", "--env-file", str(box.env_file), "--report-dir", str(report),
           f"--junitxml={junit}", "-p", "no:cacheprovider", "-q", "-rA", *WINDOWS, *args]
    for before in runs.BEFORE_RUN:  # the fault-matrix recorder and the decoy watch observe this run too
        before([*WINDOWS, *args])
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    done = when is None
    while proc.poll() is None and not done and time.monotonic() < deadline:
        if any(e.get("event") == when[0] and e.get("gate") == when[1] for e in ledger_events(report)):
            act()
            done = True
        time.sleep(0.2)
    try:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    result = RunResult(proc.returncode, out, report, parse_junit(junit), [*WINDOWS, *args])
    for after in runs.AFTER_RUN:
        after(result)
    assert done, f"the run never reached {when}:\n{out[-3000:]}"
    return result


def caught(r: RunResult, gate: str, sigs: set[str]) -> None:
    """Failed at `gate` with one of `sigs`, nothing later ran, nothing left behind."""
    try:
        assert_caught(r, gate, None)
        assert sigs & set(signature_ids(r, gate)), (signature_ids(r, gate), r.message(gate)[:500])
    finally:
        stop_leftovers(launch_records(r))


def test_namespace_mismatch_isolates_at_cluster(box, tmp_path):
    box.set_exo_faults(2, {"namespace": "someone-else"})
    caught(run_with(box, tmp_path), "cluster", {"A1"})


def test_runner_killed_is_caught_at_placement(box, tmp_path):
    """Every runner process of node 2 is SIGKILLed 2 s after it starts (as an OOM kill would)."""
    box.set_exo_faults(2, {"runner_sigkill_s": 2.0})
    caught(run_with(box, tmp_path), "placement", {"F5", "F8", "F4"})


def test_api_port_taken_before_exo_starts_is_caught_at_startup(box, tmp_path):
    """A foreign listener takes node 2's API address:port after preflight checked it: real EXO's bind fails."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def take() -> None:
        holder.bind((box.address(2), 52415))
        holder.listen(1)

    try:
        caught(run_with(box, tmp_path, ("pass", "parity"), take), "startup", {"I1", "X-EXIT"})
        holder.getsockname()  # still ours: nobody killed the holder
    finally:
        holder.close()


def test_shard_missing_when_exo_starts_is_caught(box, tmp_path):
    """A shard of node 2 disappears after the file gates passed, before EXO starts."""
    def remove() -> None:
        shard = sorted(box.node(2).model_dir.glob("*.safetensors"))[-1]
        shard.unlink()

    r = run_with(box, tmp_path, ("pass", "parity"), remove)
    try:
        failed = [g for g in ORDER if r.outcome(g) == "failed"]
        assert failed and failed[0] in ("cluster", "placement"), ({g: r.outcome(g) for g in ORDER}, r.output[-3000:])
        # Real EXO (offline): node 2 retries DownloadModel, the ring still connects, LoadModel waits for every
        # node's DownloadCompleted, so runners stall at RunnerConnected (F1 names "one node still downloading").
        caught(r, failed[0], {"D1", "E1", "E2", "F1"})
    finally:
        box.populate_model(2)


def test_node_exo_killed_mid_run_is_caught(box, tmp_path):
    """Node 2's EXO is SIGKILLed once the cluster gate passed (the launch record gives its pid)."""
    report = tmp_path / "reports"

    def kill_node2() -> None:
        folder = max(report.glob("*/ledger.jsonl"), key=lambda p: p.stat().st_mtime).parent
        rec = next(x for x in launch_records(folder) if x["node"] == 2 and x["role"] == "cluster")
        assert alive(rec)
        os.kill(rec["pid"], signal.SIGKILL)

    r = run_with(box, tmp_path, ("pass", "cluster"), kill_node2)
    failed = [g for g in ORDER if r.outcome(g) == "failed"]
    try:
        assert failed == ["placement"], ({g: r.outcome(g) for g in ORDER}, r.output[-3000:])
    finally:
        stop_leftovers(launch_records(r))
    caught(r, "placement", {"A7", "F11", "D1", "F1", "F8"})


def chat_in_flight(state: dict) -> bool:
    """Does this /state hold a TextGeneration task that is pending or running (a chat request in flight)?"""
    for task in (state.get("tasks") or {}).values():
        body = task.get("TextGeneration") if isinstance(task, dict) else None
        if isinstance(body, dict) and body.get("taskStatus") in ("Pending", "Running"):
            return True
    return False


def wait_chat_in_flight(url: str, timeout: float = 120.0) -> float:
    """Poll `url`/state until a chat request is in flight; the monotonic time it was seen (AssertionError with the
    last answer at the deadline)."""
    from modeldrop.exo.client import ExoClient
    client, last = ExoClient(url), "no answer yet"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = client.state()
            if chat_in_flight(state):
                return time.monotonic()
            last = f"tasks {json.dumps(state.get('tasks'))[:300]}"
        except Exception as e:  # noqa: BLE001 - the API is busy; poll again
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    raise AssertionError(f"no chat request in flight on {url} within {timeout:.0f}s; last seen: {last}")


@pytest.mark.fault("exo-killed-mid-chat (real)", gate="chat", signature="X-EXO-GONE", since="chat")
def test_node_exo_killed_mid_chat_is_caught_at_chat(box, tmp_path, fault_row):
    """Node 1's EXO (the API the chat gate's first request goes through) is SIGKILLed while that request is in
    flight, seen as a pending or running TextGeneration task in its /state: the chat gate fails naming node 1's
    dead exo (X-EXO-GONE), no later gate runs, and the run leaves nothing on the nodes."""
    report = tmp_path / "reports"
    seen: dict = {}

    def kill_node1_mid_chat() -> None:
        folder = max(report.glob("*/ledger.jsonl"), key=lambda p: p.stat().st_mtime).parent
        rec = next(x for x in launch_records(folder) if x["node"] == 1 and x["role"] == "cluster")
        try:
            seen["in_flight"] = wait_chat_in_flight(rec["api_url"])
        except AssertionError as e:
            seen["error"] = str(e)
            return
        assert alive(rec)
        os.kill(rec["pid"], signal.SIGKILL)
        seen["pid"], seen["killed"], seen["in_flight_at"] = rec["pid"], time.time(), time.time() - (
            time.monotonic() - seen["in_flight"])

    r = run_with(box, tmp_path, ("gate_start", "chat"), kill_node1_mid_chat)
    assert "error" not in seen, seen.get("error")
    try:
        caught(r, "chat", {"X-EXO-GONE"})
        msg = r.message("chat")
        assert f"exo of node1 (pid {seen['pid']}) died: node1 stream" in msg, msg[:500]
        assert signature_ids(r, "chat")[0] == "X-EXO-GONE", signature_ids(r, "chat")
        fail = next(e for e in ledger_events(report) if e.get("event") == "fail" and e.get("gate") == "chat")
        fault_row.verdict_s = round(float(fail["t"]) - seen["killed"], 2)  # from the kill, not the gate's start
        print(f"\nMEASURE exo-killed-mid-chat: chat verdict {fault_row.verdict_s}s after the kill "
              f"({seen['killed'] - seen['in_flight_at']:.1f}s after the request was seen); {msg[:200]}")
    finally:
        stop_leftovers(launch_records(r))

"""Whole runs of the gates against real EXO (EXO's own code, sandbox/exo_real) with real faults, each caught at
its gate with the expected signature id, no later gate run, and nothing the run started left behind.

One 2-node real-EXO sandbox per xdist worker (its "real" slot, support/slots.py), shared by the
module. Its file gates run once (`real_files`: preflight, both nodes' download and verify, node 1's canary on real
EXO, parity); each case whose fault lands at or after startup runs `--resume-bootstrap` from a copy of that run's
pass cache (a report dir of its own: the faults are injected by watching its newest ledger), so it costs its own
EXO gates only, EXO started afresh by the run, and asserts that every file gate was reused. Faults that must land
between gates (a taken port, a missing shard, a node's EXO killed) are injected by watching the run's own ledger
for the gate event; node 1's EXO killed mid-chat also waits for the
chat gate's request to show as a task in that node's /state. The namespace case runs every gate itself: it runs
with `--stop-existing-exo` and a stale real EXO plus look-alike decoys on node 1, seen by preflight and stopped
before node 1's canary, the run's first EXO. Each case's gate can only fail after every
earlier gate passed on real EXO, so the cases also prove the setup (the green run itself is
`pytest gates/ benchmarks/ --sandbox`, measured by `python -m scripts.measure_real_exo`). Select them with
`-m real_exo`; skipped
where real EXO cannot be built (no snapshot or no Python 3.13).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.exo_real.install import missing_inputs
from tests_selftest.support.cluster_runs import (
    ORDER,
    alive,
    assert_caught,
    file_gates,
    launch_records,
    newest_ledger_events,
    proc_start,
    reset_nodes,
    resume_dir,
    reused_gates,
    run_acting,
    run_file_gates,
    signature_ids,
    stop_leftovers,
)
from tests_selftest.support.runs import RunResult
from tests_selftest.support.slots import SANDBOX_BASE, slot

# Real EXO probes topology edges about every 10 s and loads on a busy CPU: windows wider than the emulator's.
WINDOWS = ["--cluster-window", "30", "--settle-window", "3", "--ready-timeout", "180"]
pytestmark = [pytest.mark.sandbox_run, pytest.mark.real_exo, pytest.mark.timeout(900),
              pytest.mark.skipif(bool(missing_inputs("new")), reason="real EXO cannot be built here")]


@pytest.fixture(scope="module")
def real():
    """A 2-node sandbox running real EXO, this worker's "real" slot."""
    n = slot("real")
    box = Sandbox(root=SANDBOX_BASE / f"real-slot{n}", slot=n, n_nodes=2, exo="real")
    box.up()
    yield box
    box.down()


@pytest.fixture
def box(real):
    """The sandbox with no node process running before the test (a resumed run reuses the preflight that would
    name a leftover exo), faults cleared and node processes stopped after it."""
    for k in range(1, real.n_nodes + 1):
        real.stop_node_processes(k)
    yield real
    reset_nodes(real)


FILE_GATES = file_gates(ORDER)  # what a resumed run reuses


@pytest.fixture(scope="module")
def real_files(real, tmp_path_factory) -> RunResult:
    """The file gates and node 1's canary on the real-EXO sandbox, once (its report dir's pass cache serves the
    resumed runs); the nodes reset after it."""
    try:
        return run_file_gates(real, tmp_path_factory.mktemp("real-files") / "reports", *WINDOWS)
    finally:
        reset_nodes(real)


@pytest.fixture
def resumable(box, real_files, tmp_path):
    """The sandbox, and tmp_path/reports holding a copy of the file gates' pass cache (a run's faults are injected
    from its own report dir's newest ledger; a test's run never writes into the shared cache)."""
    assert real_files.rc == 0, ({g: real_files.outcome(g) for g in FILE_GATES}, real_files.output[-3000:])
    resume_dir(real_files, tmp_path)
    return box


def run_with(box, tmp_path: Path, when: tuple[str, str] | None = None, act: Callable[[], None] | None = None,
             *args: str, timeout: float = 600) -> RunResult:
    """`run_acting` with this module's windows."""
    return run_acting(box, tmp_path, when, act, *WINDOWS, *args, timeout=timeout)


def run_resumed(box, tmp_path: Path, when: tuple[str, str] | None = None, act: Callable[[], None] | None = None,
                *args: str) -> RunResult:
    """`run_with` under --resume-bootstrap from `resumable`'s pass cache: every file gate reused (its ledger's
    `reuse` record), EXO started by the run itself."""
    r = run_with(box, tmp_path, when, act, "--resume-bootstrap", *args)
    try:
        assert reused_gates(r) == FILE_GATES, (reused_gates(r), {g: r.outcome(g) for g in ORDER}, r.output[-3000:])
    except AssertionError:
        stop_leftovers(launch_records(r))
        raise
    return r


def caught(r: RunResult, gate: str, sigs: set[str]) -> None:
    """Failed at `gate` with one of `sigs`, nothing later ran, nothing left behind."""
    try:
        assert_caught(r, gate, None)
        assert sigs & set(signature_ids(r, gate)), (signature_ids(r, gate), r.message(gate)[:500])
    finally:
        stop_leftovers(launch_records(r))


def _die_with_parent() -> None:
    """In a child after its user change: SIGTERM when this test process dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def start_on_node(argv: list[str], user: str, exe: str, env: dict[str, str] | None = None, cwd: str = "/",
                  executable: str | None = None, log: Path | None = None) -> subprocess.Popen:
    """`argv` as `user`, in its own session; returns once the process runs `exe` (polled with a deadline)."""
    pw = pwd.getpwnam(user)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed once the child has its copy
    try:
        proc = subprocess.Popen(argv, executable=executable, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                                cwd=cwd, env=env if env is not None else {"PATH": "/usr/bin:/bin"},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
    finally:
        if log:
            out.close()
    want, deadline, seen = os.path.realpath(exe), time.monotonic() + 30, None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            seen = os.path.realpath(f"/proc/{proc.pid}/exe")
        except OSError:
            seen = None
        if seen == want:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{argv} as {user} never ran {want} (last seen {seen}, exit {proc.poll()})")


def stale_exo_and_decoys(box, tmp_path: Path) -> tuple[subprocess.Popen, dict[str, subprocess.Popen]]:
    """On node 1, as its SSH user: a real EXO left running from the configured exo (the operator's stale one),
    and processes that only look like it: `tail <exo> -f`, `sleep` exec'd with the exo path as argv[0], and
    another user (nobody) running the exo script with the same interpreter, held in its sitecustomize."""
    node, user = box.node(1), box.node_user(1)
    exo, python = str(node.exo_cmd), str(box.real_exo.python)
    home = pwd.getpwnam(user).pw_dir
    login = {"HOME": home, "USER": user, "LOGNAME": user, "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}
    stale = start_on_node([exo], user, python, env=login, cwd=home, log=tmp_path / "stale-exo.log")
    site = Path(box.root) / "held-site"  # nobody must read it: the sandbox root is world-traversable
    site.mkdir(mode=0o755, exist_ok=True)
    (site / "sitecustomize.py").write_text("import time\ntime.sleep(86400)\n")
    held = {**box.real_exo.env, "PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    decoys = {"tail <exo> -f": start_on_node(["tail", exo, "-f"], user, shutil.which("tail") or "/usr/bin/tail"),
              "sleep as <exo>": start_on_node([exo, "3600"], user, "/bin/sleep", executable="/bin/sleep"),
              "nobody's exo": start_on_node([python, exo], "nobody", python, env=held)}
    return stale, decoys


@pytest.mark.fault("namespace-real-exo", gate="cluster", signature="A1", window="--cluster-window")
def test_namespace_mismatch_isolates_at_cluster_and_stop_existing_spares_decoys(box, tmp_path, fault_decoys):
    """Node 2 runs another namespace: caught at cluster (A1). The run also passes --stop-existing-exo with a stale
    real EXO of node 1's user running (started from the configured exo) and decoys beside it: the stale EXO is
    listed, stopped by pid before node 1's canary starts and named in the ledger's warnings; every decoy survives."""
    box.set_exo_faults(2, {"namespace": "someone-else"})
    stale, decoys = stale_exo_and_decoys(box, tmp_path)
    fault_decoys.update(decoys)
    stale_start = proc_start(stale.pid)
    try:
        # node 2 never joins: the cluster gate waits out its window, a shorter one than the other cases need
        r = run_with(box, tmp_path, None, None, "--stop-existing-exo", "--cluster-window", "15")
        caught(r, "cluster", {"A1"})
        assert stale.poll() is not None, f"the stale exo pid {stale.pid} still runs"
        listed = json.loads((r.run_folder() / "exo" / "node1-canary-existing-exo.json").read_text())["found"]
        assert [(x["pid"], x["start"]) for x in listed] == [(stale.pid, pytest.approx(stale_start, abs=1.5))], listed
        warnings = [str(e.get("value")) for e in newest_ledger_events(r.report_dir) if e.get("event") == "warning"]
        assert any(w.startswith(f"node1: --stop-existing-exo stopped pid {stale.pid} ") for w in warnings), warnings
        harmed = [name for name, p in decoys.items() if p.poll() is not None]
        assert not harmed, f"decoys stopped by the run: {harmed}"
    finally:
        for p in (stale, *decoys.values()):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=20)


@pytest.mark.fault("runner-killed-real-exo", gate="placement", signature="F5|X-RUNNER-SIGNAL|F8|F4",
                   window="--ready-timeout")
def test_runner_killed_is_caught_at_placement(resumable, tmp_path):
    """Every runner process of node 2 is SIGKILLed 2 s after it starts (as an OOM kill would)."""
    box = resumable
    box.set_exo_faults(2, {"runner_sigkill_s": 2.0})
    caught(run_resumed(box, tmp_path), "placement", {"F5", "F8", "F4"})


@pytest.mark.fault("api-port-taken-after-preflight-real-exo", gate="startup", signature="I1|X-EXIT", since="startup")
def test_api_port_taken_before_exo_starts_is_caught_at_startup(resumable, tmp_path):
    """A foreign listener takes node 2's API address:port after preflight checked it (in the file gates' run; the
    port is taken once this run reused parity, before startup): real EXO's bind fails."""
    box = resumable
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def take() -> None:
        holder.bind((box.address(2), 52415))
        holder.listen(1)

    try:
        caught(run_resumed(box, tmp_path, ("reuse", "parity"), take), "startup", {"I1", "X-EXIT"})
        holder.getsockname()  # still ours: nobody killed the holder
    finally:
        holder.close()


@pytest.mark.fault("shard-missing-at-start-real-exo", gate="placement", signature="D1", since="startup",
                   window="--ready-timeout")
def test_shard_missing_when_exo_starts_is_caught(resumable, tmp_path):
    """A shard of node 2 disappears after the file gates passed (reused by this run: their facts, node 2's manifest
    with the shard, were measured before parity's reuse), before EXO starts. The shard is moved back afterwards,
    the same file (size and mtime), so the manifest the file passes hold is node 2's again (a copy from
    `populate_model`, with other mtimes, would leave every later resumed run re-verifying)."""
    box = resumable
    held, moved = Path(box.root) / "held-shard", []

    def remove() -> None:
        shard = sorted(box.node(2).model_dir.glob("*.safetensors"))[-1]
        held.mkdir(exist_ok=True)
        os.replace(shard, held / shard.name)  # the sandbox root: the model dir's filesystem, a rename
        moved.append(shard)

    try:
        r = run_resumed(box, tmp_path, ("reuse", "parity"), remove, "--ready-timeout", "60")  # a 20 s stall budget
        failed = [g for g in ORDER if r.outcome(g) == "failed"]
        assert failed and failed[0] in ("cluster", "placement"), ({g: r.outcome(g) for g in ORDER}, r.output[-3000:])
        # Real EXO (offline): node 2's worker keeps planning DownloadModel and records no download at all, the
        # ring still connects, LoadModel waits for every node's DownloadCompleted, so runners stall at
        # RunnerConnected: D1 names node 2, the placed node with no download record.
        caught(r, failed[0], {"D1"})
    finally:
        try:
            for shard in moved:
                os.replace(held / shard.name, shard)
        except OSError:
            box.populate_model(2)  # complete again, if not as verified
            raise


@pytest.mark.fault("exo-killed-after-cluster-real-exo", gate="placement", signature="X-EXO-GONE", since="placement")
def test_node_exo_killed_mid_run_is_caught(resumable, tmp_path):
    """Node 2's EXO is SIGKILLed once the cluster gate passed (the launch record gives its pid): placement fails
    naming node 2's dead exo first (X-EXO-GONE), found by the wait's own look at the exo processes (every 5 s), not
    when node 1's EXO drops its peer (about 45 s later)."""
    box = resumable
    report = tmp_path / "reports"

    def kill_node2() -> None:
        folder = max(report.glob("*/ledger.jsonl"), key=lambda p: p.stat().st_mtime).parent
        rec = next(x for x in launch_records(folder) if x["node"] == 2 and x["role"] == "cluster")
        assert alive(rec)
        os.kill(rec["pid"], signal.SIGKILL)

    r = run_resumed(box, tmp_path, ("pass", "cluster"), kill_node2)
    failed = [g for g in ORDER if r.outcome(g) == "failed"]
    try:
        assert failed == ["placement"], ({g: r.outcome(g) for g in ORDER}, r.output[-3000:])
    finally:
        stop_leftovers(launch_records(r))
    caught(r, "placement", {"X-EXO-GONE"})  # then what the instance showed: A7, F11, D1, F1 or F8
    assert signature_ids(r, "placement")[0] == "X-EXO-GONE", signature_ids(r, "placement")
    assert "exo of node2 (pid " in r.message("placement"), r.message("placement")[:500]
    assert "not Ready after" in r.message("placement"), r.message("placement")[:500]  # the watch, not a vanish


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


@pytest.mark.fault("killed-mid-chat-real-exo", gate="chat", signature="X-EXO-GONE", since="chat")
def test_node_exo_killed_mid_chat_is_caught_at_chat(resumable, tmp_path, fault_row):
    """Node 1's EXO (the API the chat gate's first request goes through) is SIGKILLed while that request is in
    flight, seen as a pending or running TextGeneration task in its /state: the chat gate fails naming node 1's
    dead exo (X-EXO-GONE), no later gate runs, and the run leaves nothing on the nodes."""
    box = resumable
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

    r = run_resumed(box, tmp_path, ("gate_start", "chat"), kill_node1_mid_chat)
    assert "error" not in seen, seen.get("error")
    try:
        caught(r, "chat", {"X-EXO-GONE"})
        msg = r.message("chat")
        assert f"exo of node1 (pid {seen['pid']}) died: node1 stream" in msg, msg[:500]
        assert signature_ids(r, "chat")[0] == "X-EXO-GONE", signature_ids(r, "chat")
        fail = next(e for e in newest_ledger_events(report) if e.get("event") == "fail" and e.get("gate") == "chat")
        fault_row.verdict_s = round(float(fail["t"]) - seen["killed"], 2)  # from the kill, not the gate's start
        print(f"\nMEASURE killed-mid-chat-real-exo: chat verdict {fault_row.verdict_s}s after the kill "
              f"({seen['killed'] - seen['in_flight_at']:.1f}s after the request was seen); {msg[:200]}")
    finally:
        stop_leftovers(launch_records(r))

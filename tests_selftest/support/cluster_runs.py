"""Whole runs of the EXO gates against a cluster sandbox: the run windows, the run's launch records, whether
a recorded process still runs (pid and start time), stopping leftovers, signature ids from the ledger, the
check that a fault was caught at its gate with nothing later run and nothing left behind, and resuming from
the file gates' passes (`run_file_gates` once, then each run in `resume_dir` with `--resume-bootstrap`, its
`reused_gates` checked against `file_gates`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from modeldrop.gatetable import gate_order
from tests_selftest.support import DATA
from tests_selftest.support.faultmatrix import ledger_events, proc_start_ticks
from tests_selftest.support.runs import RunResult, later_gates_not_run, run_suite, start_run

WINDOWS = ["--cluster-window", "8", "--settle-window", "3", "--ready-timeout", "60"]
ORDER = gate_order(2)
FILE_GATES_K = "preflight or node or parity"  # the file gates and the canary: every gate before EXO's startup
# EXO probes topology edges every 10 s, so the cluster gate waits for the emulator's second round; a whole run whose
# case is not about that period sets the emulator's probe to 2 s (`quick_edges`) and reaches placement sooner
QUICK_EDGES = {"edge_probe_s": 2.0}


def quick_edges(sbx, timing: dict | None = None) -> None:
    """Every emulator node of sbx probes edges every QUICK_EDGES s, plus `timing` (until the next up())."""
    for k in range(1, sbx.n_nodes + 1):
        sbx.set_exo_timing(k, {**QUICK_EDGES, **(timing or {})})


def file_gates(order: list[str]) -> list[str]:
    """The gates of `order` before EXO's startup (preflight .. parity): what a resumed run reuses."""
    return order[:order.index("startup")]


def run_file_gates(box, reports: Path, *args: str) -> RunResult:
    """`pytest gates/ -k FILE_GATES_K` on the box into `reports`: the passes later runs resume from."""
    return run_suite(["gates/"], Path(box.env_file), reports, *args, "-k", FILE_GATES_K, timeout=600)


def resume_dir(files: RunResult, tmp_path: Path) -> Path:
    """tmp_path/reports holding a copy of `files`' pass cache: a run's own report dir (its newest ledger is its
    own, and it never writes into the shared cache)."""
    reports = tmp_path / "reports"
    reports.mkdir(exist_ok=True)
    shutil.copy2(files.report_dir / "pass_cache.json", reports / "pass_cache.json")
    return reports


def reused_gates(r: RunResult) -> list[str]:
    """The gates whose cached passes run `r` reused, in ledger order."""
    return [e.get("gate") for e in ledger_events(r.run_folder())[0] if e.get("event") == "reuse"]


def reset_nodes(sbx) -> None:
    """After a test: every node user's process stopped, EXO faults cleared, the sandbox up again."""
    for k in range(1, sbx.n_nodes + 1):
        sbx.stop_node_processes(k)
        sbx.set_exo_faults(k, {})
    sbx.up()


def launch_records(r: RunResult | Path) -> list[dict]:
    """The launch records of a run (pass the folder when a later run in the same report dir moved `latest`)."""
    folder = r if isinstance(r, Path) else r.run_folder()
    recs = [json.loads(p.read_text()) for p in sorted((folder / "exo").glob("node*-*.json"))]
    return [r for r in recs if "role" in r]  # not node<k>-<role>-existing-exo.json (what --stop-existing-exo listed)


def proc_start(pid: int) -> float | None:
    """Start time (epoch s) of a live pid, as the probes compute it; None when gone or a zombie."""
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return None
    btime = next(float(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime "))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def alive(rec: dict) -> bool:
    s = proc_start(rec["pid"])
    return s is not None and (rec.get("start") is None or abs(s - rec["start"]) <= 1.5)


def wait_gone(recs: list[dict], timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [r for r in recs if alive(r)]
        if not left:
            return []
        time.sleep(0.2)
    return [r for r in recs if alive(r)]


def stop_leftovers(recs: list[dict]) -> None:
    """Test cleanup only: TERM the process group of each launch record still alive (identity checked)."""
    import signal
    for rec in recs:
        if alive(rec):
            try:
                os.killpg(rec["pid"], signal.SIGTERM)
            except OSError:
                pass
    wait_gone(recs, 10.0)


def signature_ids(r: RunResult, gate: str) -> list[str]:
    out = []
    for line in (r.run_folder() / "ledger.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event") == "signature" and ev.get("gate") == gate:
            out += [s["id"] for s in ev.get("signatures") or []]
    return out


def assert_caught(r: RunResult, gate: str, sig: str | None) -> None:
    assert r.outcome(gate) == "failed", f"{gate}: {r.outcome(gate)}\n{r.output[-3000:]}"
    assert later_gates_not_run(r, gate, ORDER) == []
    if sig:  # a signature id, or text of the gate's message
        assert sig in signature_ids(r, gate) or sig in r.message(gate), (signature_ids(r, gate), r.message(gate))
    assert wait_gone(launch_records(r)) == [], "processes left behind after a failed run"


def newest_ledger_events(report_dir: Path) -> list[dict]:
    """The events of the newest run folder's ledger under `report_dir` (empty before it exists)."""
    ledgers = sorted(report_dir.glob("*/ledger.jsonl"), key=lambda p: p.stat().st_mtime)
    return ledger_events(ledgers[-1].parent)[0] if ledgers else []  # a line being written is left out


def run_acting(box, tmp_path: Path, when: tuple[str, str] | None = None, act: Callable[[], None] | None = None,
             *args: str, timeout: float = 600) -> RunResult:
    """`pytest gates/ *args` against the sandbox; `act()` runs once, as soon as the ledger shows event `when`
    = (event, gate), e.g. ("pass", "preflight")."""
    report = tmp_path / "reports"
    with start_run(["gates/"], Path(box.env_file), report, *args) as run:
        deadline = time.monotonic() + timeout
        done = when is None
        while run.running() and not done and time.monotonic() < deadline:
            if any(e.get("event") == when[0] and e.get("gate") == when[1] for e in newest_ledger_events(report)):
                act()
                done = True
            time.sleep(0.2)
        result = run.wait(max(1.0, deadline - time.monotonic()))
    assert done, f"the run never reached {when}:\n{result.output[-3000:]}"
    return result


# -- the guide's own env file ---------------------------------------------------------------------
GUIDE_ENV = DATA / "seed-model_drop.env"
GUIDE_POINTED = ("MODEL_ID", "MODEL_INSTANCE_ID", "NODE1", "NODE2", "MODEL_DIR_NODE1", "MODEL_DIR_NODE2",
                 "HF_CMD_NODE1", "HF_CMD_NODE2", "EXO_LOG_DIR_NODE1", "EXO_LOG_DIR_NODE2", "PROFILE_PATH",
                 "RUN_REPORT_DIR")


def guide_env_for(box, tmp_path: Path) -> Path:
    """The guide's env block verbatim, with only its model, node and dir lines pointed at the sandbox (their
    quotes, comments and `${MODEL_INSTANCE_ID}` kept), plus the sandbox-only keys (ssh config, hub, exo path)."""
    sbx = dict(line.split("=", 1) for line in Path(box.env_file).read_text().splitlines()
               if line and not line.startswith("#"))
    nodes = sbx["NODES"].split(",")
    folder = sbx["MODEL_ID"].replace("/", "--")
    point = {"MODEL_ID": sbx["MODEL_ID"], "MODEL_INSTANCE_ID": folder, "NODE1": nodes[0], "NODE2": nodes[1],
             "PROFILE_PATH": str(tmp_path / "model_profiles.json"), "RUN_REPORT_DIR": str(tmp_path / "reports")}
    for k in (1, 2):
        parent = sbx[f"MODEL_DIR_NODE{k}"].rsplit("/", 1)[0]
        point[f"MODEL_DIR_NODE{k}"] = parent + "/${MODEL_INSTANCE_ID}"
        point[f"HF_CMD_NODE{k}"], point[f"EXO_LOG_DIR_NODE{k}"] = sbx[f"HF_CMD_NODE{k}"], sbx[f"EXO_LOG_DIR_NODE{k}"]
    out = []
    for line in GUIDE_ENV.read_text().splitlines():
        m = re.match(r'^([A-Z0-9_]+)="([^"]*)"(.*)$', line)
        out.append(f'{m.group(1)}="{point[m.group(1)]}"{m.group(3)}' if m and m.group(1) in point else line)
    changed = {a.split("=")[0] for a, b in zip(out, GUIDE_ENV.read_text().splitlines(), strict=True) if a != b}
    assert changed <= set(GUIDE_POINTED) and "EXO_LIBP2P_PORT=\"51001\"" in out
    extra = [f"{key}={sbx[key]}" for key in ("SSH_CONFIG", "SSH_KNOWN_HOSTS", "HF_ENDPOINT", "EXO_CMD_NODE1",
                                              "EXO_CMD_NODE2") if key in sbx]
    env = tmp_path / "model_drop.env"
    env.write_text("\n".join(out + ["", "# the sandbox's own keys", *extra]) + "\n")
    return env

"""`--stop-existing-exo` faults, injected with real processes: decoys that merely NAME the exo path (`tail
<exo> -f`, `sleep` started with the exo path as argv[0], a `sleep` symlinked under the name exo, a python
running another script with the exo path as an argument) and another user's exo must all survive; this
user's console-script exo is listed before it is stopped; a probe never fails on another user's process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from modeldrop import probes
from modeldrop.exo.launcher import ExoLauncher
from modeldrop.nodes import LocalNode
from modeldrop.probes import procs as procs_probe

pytestmark = pytest.mark.timeout(90)
PY = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
EXO_SCRIPT = f"#!{PY}\nimport time\ntime.sleep(120)\n"


@pytest.fixture
def world():
    """An exo console script in a world-readable dir, and the processes started around it (stopped after)."""
    base = Path(tempfile.mkdtemp(prefix="md-exo-", dir="/var/tmp"))
    base.chmod(0o755)
    exo = base / "bin" / "exo"
    exo.parent.mkdir(mode=0o755)
    exo.write_text(EXO_SCRIPT)
    exo.chmod(0o755)
    started: list[subprocess.Popen] = []

    def start(argv, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             **kw)
        started.append(p)
        return p

    yield SimpleNamespace(base=base, exo=exo, start=start)
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()
    subprocess.run(["rm", "-rf", str(base)], check=False)


def _wait_running(pids: list[int]) -> None:
    """Poll until every pid shows its own argv in /proc (exec done, not our forked copy), with a deadline."""
    ours = Path("/proc/self/cmdline").read_bytes()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(Path(f"/proc/{p}/cmdline").read_bytes() not in (b"", ours) for p in pids):
            return
        time.sleep(0.02)
    raise AssertionError(f"processes {pids} did not start")


def _decoys(world) -> dict[str, subprocess.Popen]:
    link = world.base / "other" / "exo"
    link.parent.mkdir()
    link.symlink_to("/bin/sleep")
    other_script = world.base / "other" / "tool.py"
    other_script.write_text("import time\ntime.sleep(120)\n")
    d = {"tail <exo> -f": world.start(["tail", str(world.exo), "-f"]),
         "sleep named exo": world.start([str(world.exo), "120"], executable="/bin/sleep"),
         "sleep symlinked as exo": world.start([str(link), "120"]),
         "python other.py <exo>": world.start([PY, str(other_script), str(world.exo)])}
    if os.geteuid() == 0:
        d["another user's exo"] = world.start([str(world.exo)], user="nobody")
    return d


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="decoys are Linux processes")
@pytest.mark.fault("stop-existing-exo-spares-decoys", gate="startup", signature="listed")
def test_only_this_users_exo_program_is_listed_then_stopped(world, tmp_path):
    real = world.start([str(world.exo)])
    decoys = _decoys(world)
    _wait_running([real.pid, *(p.pid for p in decoys.values())])
    node = LocalNode("node1")
    calls: list[str] = []
    written: dict = {}
    orig = node.run_probe

    def traced(name, args, **kw):
        calls.append(name)
        return orig(name, args, **kw)

    node.run_probe = traced
    folder = SimpleNamespace(path=tmp_path,
                             write_json=lambda rel, obj: (calls.append("list"), written.update({rel: obj})))
    la = ExoLauncher(node, SimpleNamespace(exo_cmd=str(world.exo), index=1, name="node1"),
                     SimpleNamespace(stop_existing_exo=True, sources={}, api_port=52415), folder)
    t0 = time.monotonic()
    stopped = la._stop_existing("canary")
    took = time.monotonic() - t0
    assert [s["pid"] for s in stopped] == [real.pid] and stopped[0]["result"] == "stopped-term", stopped
    assert calls.index("list") < calls.index("stop")
    assert [f["pid"] for f in written["exo/node1-canary-existing-exo.json"]["found"]] == [real.pid]
    assert real.wait(5) is not None
    alive = {name: p.poll() is None for name, p in decoys.items()}
    assert all(alive.values()), alive
    assert took < 20, took


def test_program_matching_rules(tmp_path):
    exo = tmp_path / "exo"
    exo.write_text(f"#!{PY}\n")
    envexo = tmp_path / "envexo"
    envexo.write_text("#!/usr/bin/env python3\n")
    prog, envprog = procs_probe.program(str(exo)), procs_probe.program(str(envexo))
    py = os.path.realpath(PY)
    assert procs_probe.runs({"exe": py, "cmdline": [PY, str(exo), "-v"]}, prog)
    assert not procs_probe.runs({"exe": "/usr/bin/tail", "cmdline": ["tail", str(exo), "-f"]}, prog)
    assert not procs_probe.runs({"exe": "/usr/bin/sleep", "cmdline": [str(exo), "9"]}, prog)
    assert not procs_probe.runs({"exe": py, "cmdline": [PY, "/other.py", str(exo)]}, prog)
    assert not procs_probe.runs({"exe": None, "cmdline": [PY, str(exo)]}, prog)  # unknown exe: not ours to say
    framework = "/Library/Frameworks/Python.framework/Versions/3.12/Resources/Python.app/Contents/MacOS/Python"
    assert procs_probe.runs({"exe": framework, "cmdline": [PY, str(exo)]}, prog)  # macOS framework re-exec
    assert not procs_probe.runs({"exe": "/bin/sleep", "cmdline": [PY, str(exo)]}, prog)
    assert procs_probe.runs({"exe": py, "cmdline": ["python3", str(envexo)]}, envprog)
    assert not procs_probe.runs({"exe": "/usr/bin/tail", "cmdline": ["tail", str(envexo)]}, envprog)
    binary = procs_probe.program("/bin/sleep")
    assert procs_probe.runs({"exe": os.path.realpath("/bin/sleep"), "cmdline": ["anything"]}, binary)
    assert not procs_probe.runs({"exe": "/usr/bin/tail", "cmdline": ["/bin/sleep"]}, binary)


@pytest.mark.skipif(os.geteuid() != 0 or not sys.platform.startswith("linux"), reason="needs root to run as nobody")
def test_probes_as_another_user_never_fail_on_a_foreign_process(world):
    mine = world.start([str(world.exo)])  # root's exo; the probes below run as nobody
    _wait_running([mine.pid])
    row = LocalNode("n").run_probe("procs", {"pids": [mine.pid], "exe_paths": None})["procs"][0]

    def as_nobody(name: str, args: dict) -> dict:
        out = subprocess.run([PY, "-"], input=probes.probe_payload(name, args), capture_output=True, user="nobody",
                             timeout=60, cwd="/")
        result = probes.parse_result(out.stdout.decode())
        assert result is not None, out.stderr.decode()[-500:]
        return result

    listed = as_nobody("procs", {"pids": None, "exe_paths": [str(world.exo)], "own_only": True})["procs"]
    assert mine.pid not in [p["pid"] for p in listed]
    everyone = as_nobody("procs", {"pids": None, "exe_paths": [str(world.exo)]})["procs"]
    assert all(p["pid"] != mine.pid or p["uid"] == 0 for p in everyone)
    res = as_nobody("stop", {"pid": mine.pid, "expect_start": row["start"], "grace_s": 1})
    assert res["result"] == "not-permitted" and mine.poll() is None, res


def test_shell_trampoline_script_runs_as_the_interpreter_it_execs(tmp_path):
    """A `#!/bin/sh` console script that re-executes itself (pip's form for an interpreter path with a space, and
    one with `env K=V` before it) is the program of a process running that interpreter on it, not of the shell;
    a line that does not exec "$0" leaves the shell as the interpreter."""
    py = os.path.realpath(PY)
    spaced = tmp_path / "my env" / "python3"
    spaced.parent.mkdir()
    spaced.symlink_to(py)
    pip = tmp_path / "exo"
    pip.write_text(f"#!/bin/sh\n'''exec' \"{spaced}\" \"$0\" \"$@\"\n' '''\nimport sys\n")
    envd = tmp_path / "exo-env"
    envd.write_text(f"#!/bin/sh\n# a console script\n\n''''exec env A='x y' B=1 {PY} \"$0\" \"$@\" # '''\nimport sys\n")
    plain = tmp_path / "exo-plain"
    plain.write_text("#!/bin/sh\nexec sleep 5\n")
    for script in (pip, envd):
        prog = procs_probe.program(str(script))
        assert prog == {"script": str(script), "interpreter": py}, prog
        assert procs_probe.runs({"exe": py, "cmdline": [str(spaced), str(script), "-v"]}, prog)
        assert not procs_probe.runs({"exe": "/usr/bin/tail", "cmdline": ["tail", str(script), "-f"]}, prog)
        assert not procs_probe.runs({"exe": os.path.realpath("/bin/sh"), "cmdline": ["sh", str(script)]}, prog)
        assert not procs_probe.runs({"exe": py, "cmdline": [PY, "/other.py", str(script)]}, prog)
    assert procs_probe.program(str(plain))["interpreter"] == os.path.realpath("/bin/sh")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stop_reaches_the_group_of_a_killed_session_leader_only_when_asked(world):
    """A session leader (as `spawn` starts exo) SIGKILLed from outside leaves its child (a runner: the same python)
    in its group: `stop` with `orphans` stops that group, without it the probe only says the leader is gone."""
    node = LocalNode("node1")
    runner = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)")
    results = []
    for orphans in (False, True):
        leader = world.start([sys.executable, "-c", runner], start_new_session=True)
        _wait_running([leader.pid])
        start = node.run_probe("procs", {"pids": [leader.pid], "exe_paths": None})["procs"][0]["start"]
        deadline = time.monotonic() + 10
        while not (kids := [p for p in procs_probe.all_procs() if p["ppid"] == leader.pid
                            and p["cmdline"][:2] == [sys.executable, "-c"]]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert kids, "the leader's child never started"
        os.kill(leader.pid, 9)
        leader.wait()
        res = node.run_probe("stop", {"pid": leader.pid, "expect_start": start, "grace_s": 2, "orphans": orphans,
                                      "expect_exes": [sys.executable]})
        child_alive = procs_probe.proc_info(kids[0]["pid"]) is not None
        results.append((res["result"], child_alive))
        if child_alive:
            os.kill(kids[0]["pid"], 9)
    assert results == [("gone", True), ("stopped-term", False)], results

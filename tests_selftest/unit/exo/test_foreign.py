"""exo found where it is installed (`installs`, the `facts` probe) and exo the run did not start (`foreign`, the
`exos` probe): real processes of every form on this machine, decoys that only look like exo, and the lines
preflight prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modeldrop.config import NodeConfig
from modeldrop.exo import foreign, installs
from modeldrop.nodes import LocalNode
from tests_selftest.support.exo_fakes import make_cfg

PY = os.path.realpath(sys.executable)


@pytest.fixture
def node() -> LocalNode:
    return LocalNode("node1", python_cmd="/usr/bin/python3")


# -- where exo is installed --------------------------------------------------------------------------------
def _exe(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_facts_find_each_install_once_by_real_path(node, tmp_path, monkeypatch):
    """The facts probe looks where uv tool and pipx put exo (their bin-dir variables here), lists a link to an
    install already found once, and names the tool from where the real file lives."""
    tool = _exe(tmp_path / "share/uv/tools/exo/bin/exo")
    (tmp_path / "uvbin").mkdir()
    (tmp_path / "uvbin/exo").symlink_to(tool)
    (tmp_path / "xdg").mkdir()
    (tmp_path / "xdg/exo").symlink_to(tool)
    monkeypatch.setenv("UV_TOOL_BIN_DIR", str(tmp_path / "uvbin"))
    monkeypatch.setenv("XDG_BIN_HOME", str(tmp_path / "xdg"))
    found = [f for f in node.run_probe("facts", {})["exo_installs"] if str(tmp_path) in f["path"]]
    assert found == [{"path": str(tmp_path / "uvbin/exo"), "realpath": str(tool), "form": "uv tool"}]
    _exe(tmp_path / "pipxbin/exo")
    monkeypatch.setenv("PIPX_BIN_DIR", str(tmp_path / "pipxbin"))
    found = [f for f in node.run_probe("facts", {})["exo_installs"] if str(tmp_path) in f["path"]]
    assert [f["form"] for f in found] == ["uv tool", "pipx"]


def _nc(exo_cmd: str = "") -> NodeConfig:
    return NodeConfig(2, "node2", "me@studio2", "/Users/me/Models/a--b", "/opt/homebrew/bin/hf", exo_cmd, "~/logs")


BREW = {"path": "/opt/homebrew/bin/exo", "realpath": "/opt/homebrew/Cellar/exo/1.0/bin/exo", "form": "Homebrew"}
APP = {"path": "/Applications/EXO.app/Contents/Resources/exo/exo",
       "realpath": "/Applications/EXO.app/Contents/Resources/exo/exo", "form": "EXO.app"}


def test_choose_configured_found_none_or_two():
    one = installs.choose(_nc(), {"exo_installs": [BREW]})
    assert one.path == "/opt/homebrew/bin/exo" and one.problem is None
    assert one.line("node2") == "node2: exo /opt/homebrew/bin/exo (found: Homebrew, no EXO_CMD_NODE2)"
    set_by = installs.choose(_nc("/x/exo"), {"exo_installs": [BREW, APP]}, {"EXO_CMD_NODE2": "m.env:7"})
    assert set_by.path == "/x/exo" and set_by.how == "set by EXO_CMD_NODE2 (m.env:7)" and set_by.problem is None
    none = installs.choose(_nc(), {"exo_installs": []})
    assert none.path is None and none.problem.startswith(
        "node2 (me@studio2): no EXO_CMD_NODE2 (nor EXO_CMD) and no exo where exo installs to (/opt/homebrew/bin/exo, "
        "/usr/local/bin/exo, /Applications/EXO.app")
    assert none.problem.endswith("set EXO_CMD_NODE2=<absolute path of exo on that node>")
    two = installs.choose(_nc(), {"exo_installs": [BREW, APP]})
    assert two.path is None and two.problem == (
        "node2 (me@studio2): two different exo installs and no EXO_CMD_NODE2 to choose: /opt/homebrew/bin/exo "
        "(Homebrew, -> /opt/homebrew/Cellar/exo/1.0/bin/exo) and /Applications/EXO.app/Contents/Resources/exo/exo "
        "(EXO.app); set EXO_CMD_NODE2 to the one to run (and remove the other: both can be started on that Mac)")
    assert "\n" not in two.problem


def test_guide_config_without_exo_key_resolves_per_node(tmp_path):
    """The guide's config block has no exo key: the config leaves exo_cmd empty and the launcher runs what the
    node's facts found (the canary and cluster argv start with it)."""
    from modeldrop.config import load_config
    from modeldrop.exo.launcher import ExoLauncher
    from tests_selftest.support.exo_fakes import FakeNode, FakeRunFolder

    cfg = load_config({}, environ={"MODEL_ID": "a/b", "NODES": "u@h1", "PROFILE_PATH": str(tmp_path / "p.json"),
                                   "RUN_REPORT_DIR": str(tmp_path / "r")})
    assert cfg.node(1).exo_cmd == ""

    class Brew(FakeNode):
        def _p_facts(self, a):
            return {**super()._p_facts(a), "exo_installs": [BREW]}
    la = ExoLauncher(Brew(), cfg.node(1), cfg, FakeRunFolder(tmp_path / "run"))
    assert la.command("canary")[0][0] == "/opt/homebrew/bin/exo"
    from modeldrop.exo.launcher import LaunchError
    with pytest.raises(LaunchError, match="no EXO_CMD_NODE1 \\(nor EXO_CMD\\) and no exo where exo installs to"):
        ExoLauncher(FakeNode(), cfg.node(1), cfg, FakeRunFolder(tmp_path / "run2")).command("cluster")


# -- exo the run did not start -------------------------------------------------------------------------------
@pytest.fixture
def forms(tmp_path):
    """Real processes: exo as a venv console script, as `python -m exo`, under a parent named uv; decoys that
    only look like exo. Yields {name: Popen}; all stopped afterwards."""
    pkg = tmp_path / "src"
    (pkg / "exo").mkdir(parents=True)
    (pkg / "exo/__init__.py").write_text("")
    (pkg / "exo/main.py").write_text("import time\n\ndef main():\n    time.sleep(120)\n")
    (pkg / "exo/__main__.py").write_text("from exo.main import main\nmain()\n")
    script = _exe(tmp_path / "checkout/.venv/bin/exo",
                  f"#!{PY}\nimport sys\nsys.path.insert(0, {str(pkg)!r})\nfrom exo.main import main\n"
                  "if __name__ == '__main__':\n    sys.exit(main())\n")
    fake = _exe(tmp_path / "bin/exo", f"#!{PY}\nimport time\ntime.sleep(120)\n")  # named exo, runs no exo
    sleeper = tmp_path / "sleepbin/exo"
    sleeper.parent.mkdir()
    shutil.copy("/bin/sleep", sleeper)
    uv = tmp_path / "uvbin/uv"
    uv.parent.mkdir()
    spawn_child = f"import subprocess; subprocess.run([{str(script)!r}, '--api-port', '52998'])"
    procs = {
        "console": subprocess.Popen([str(script), "--api-port", "52999"]),
        "module": subprocess.Popen([PY, "-m", "exo", "-v"], cwd=pkg),
        "uv": subprocess.Popen([str(uv), "-c", spawn_child, "run", "exo"], executable=PY),
        "fake_script": subprocess.Popen([str(fake), "--api-port", "52415"]),
        "argv_only": subprocess.Popen([PY, "-c", "import time; time.sleep(120)", "-m", "exo"]),
        "sleep_named_exo": subprocess.Popen([str(script), "120"], executable=str(sleeper)),
    }
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(_children(procs["uv"].pid)) < 1:
        time.sleep(0.05)
    yield procs, script
    for p in [*procs.values()]:
        for c in _children(p.pid):
            subprocess.run(["kill", "-9", str(c)], check=False)
        p.kill()
        p.wait(5)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_exos_probe_tells_every_form_by_program_and_no_decoy(node, forms):
    procs, script = forms
    uv_child = _children(procs["uv"].pid)[0]
    ours = {p.pid for p in procs.values()} | {uv_child}
    rows = {r["pid"]: r for r in node.run_probe("exos", {"programs": [], "addresses": ["127.0.0.1"]})["exos"]
            if r["pid"] in ours}
    assert set(rows) == {procs["console"].pid, procs["module"].pid, uv_child}, rows
    console = rows[procs["console"].pid]
    assert console["program"] == str(script) and console["form"] == "uv run / venv"
    assert (console["api_port"], console["port_from"], console["serving"], console["own"]) == (52999, "argv", False,
                                                                                              True)
    module = rows[procs["module"].pid]
    assert module["form"] == "python -m exo" and "-m exo (package " in module["program"]
    assert (module["api_port"], module["port_from"]) == (52415, "default")
    assert rows[uv_child]["form"] == "uv run" and rows[uv_child]["parent"].split()[0].endswith("/uv")
    by_path = node.run_probe("exos", {"programs": [str(script)], "addresses": ["127.0.0.1"]})["exos"]
    assert {r["pid"] for r in by_path if r["pid"] in ours} == set(rows)


def test_stop_own_stops_by_pid_after_the_identity_check(node, forms):
    procs, _ = forms
    found = [f for f in foreign.scan(node, [], ["127.0.0.1"], 52415) if f.pid == procs["console"].pid]
    assert len(found) == 1
    out = foreign.stop_own(node, found, grace_s=5)
    assert [o["result"] for o in out] == ["stopped-term"] and procs["console"].wait(5) is not None
    assert procs["fake_script"].poll() is None and procs["sleep_named_exo"].poll() is None


def _row(pid: int, own: bool = True, **kw) -> foreign.ForeignExo:
    base = {"pid": pid, "start": 1.0, "exe": "/usr/bin/python3.13", "cmdline": ["python3", "/opt/homebrew/bin/exo"],
            "program": "/opt/homebrew/bin/exo", "form": "Homebrew", "user": "me" if own else "alice", "own": own,
            "api_port": 52415, "port_from": "argv", "serving": True}
    return foreign.ForeignExo.of({**base, **kw})


def test_preflight_lines_name_each_exo_and_the_one_command(tmp_path):
    cfg = make_cfg(tmp_path)
    rerun = "pytest gates/ --model a/b --env-file config/model_drop.env"
    problems, warnings = foreign.preflight_lines({2: [_row(4242)]}, cfg, rerun)
    assert problems == [
        "node2 (u@h2): exo this run did not start is running: pid 4242 /opt/homebrew/bin/exo (Homebrew, user me, "
        "API port 52415, serving)",
        f"clear them with one command: {rerun} --stop-existing-exo (stops only the SSH user's exo listed above, each "
        "by pid after an identity check; STOP_EXISTING_EXO=true in the env file does it on every run)"]
    assert warnings == []
    other = _row(77, own=False, serving=False, api_port=52416, form="EXO.app", program="/Applications/EXO.app/"
                 "Contents/MacOS/EXO")
    problems, warnings = foreign.preflight_lines({1: [other]}, cfg, rerun)
    assert problems == [] and warnings == [
        "node1 (u@h1): alice's exo is running: pid 77 /Applications/EXO.app/Contents/MacOS/EXO (EXO.app, user alice, "
        "API port 52416); the run cannot stop another user's process: quit it in alice's session, or on that node: "
        "sudo kill 77"]
    cfg = make_cfg(tmp_path, STOP_EXISTING_EXO="true")
    problems, warnings = foreign.preflight_lines({2: [_row(4242, port_from="default")]}, cfg, rerun)
    assert problems == [] and warnings == [
        "node2 (u@h2): exo this run did not start: pid 4242 /opt/homebrew/bin/exo (Homebrew, user me, API port 52415 "
        "(exo's default), serving); --stop-existing-exo stops it by pid before exo starts there"]


# -- faults caught at preflight (library-level rows of the fault matrix) -------------------------------------
class Installs:
    """A fake node whose facts list `installs` (where exo installs to)."""

    def __init__(self, installs):
        from tests_selftest.support.exo_fakes import FakeNode
        self.node = FakeNode()
        base = self.node._p_facts
        self.node._p_facts = lambda a: {**base(a), "exo_installs": installs}


@pytest.mark.fault("two-exo-installs", gate="preflight", signature="two different exo installs")
def test_two_exo_installs_on_one_node_stop_preflight_naming_both(tmp_path, fault_row):
    from modeldrop.config import load_config
    from modeldrop.exo.preflight import exo_preflight
    cfg = load_config({}, environ={"MODEL_ID": "a/b", "NODES": "u@h1,u@h2", "PROFILE_PATH": str(tmp_path / "p.json"),
                                   "RUN_REPORT_DIR": str(tmp_path / "r")})
    out = exo_preflight({1: Installs([BREW]).node, 2: Installs([BREW, APP]).node}, cfg)
    two = [p for p in out.problems if "two different exo installs" in p]
    assert len(two) == 1 and two[0].startswith("node2 (u@h2): two different exo installs and no EXO_CMD_NODE2")
    assert BREW["path"] in two[0] and APP["path"] in two[0] and "set EXO_CMD_NODE2" in two[0]
    assert out.notes == ["node1: exo /opt/homebrew/bin/exo (found: Homebrew, no EXO_CMD_NODE1)"]
    assert 2 not in out.builds  # nothing is probed or started with a guess
    fault_row.caught_by, fault_row.signature_seen = "preflight", True
    fault_row.signature_matched = "two different exo installs"


@pytest.mark.fault("exo-without-no-fast-synch", gate="preflight", signature="does not list")
def test_an_exo_that_does_not_list_the_synch_flag_asked_for_stops_preflight(tmp_path, fault_row):
    from modeldrop.exo.preflight import exo_preflight
    from tests_selftest.support.exo_fakes import NEW_HELP, FakeNode
    old_exo = NEW_HELP.replace("  [--fast-synch | --no-fast-synch]\n", "")
    cfg = make_cfg(tmp_path, EXO_SYNCH_FLAG="no-fast-synch")
    out = exo_preflight({1: FakeNode(), 2: FakeNode(help_text=old_exo)}, cfg)
    assert out.problems == ["node2: EXO_SYNCH_FLAG (environment) asks for --no-fast-synch, which "
                            "`~/exo/.venv/bin/exo --help` does not list (exo would exit on it); install an exo that "
                            "has it there (exo since 2026-01-16), or set EXO_SYNCH_FLAG=auto"]
    fault_row.caught_by, fault_row.signature_seen, fault_row.signature_matched = "preflight", True, "does not list"

"""Shared kit for the plugin/ledger self-tests: a tiny fake gate suite run with `pytester`.

No tests here. `make_suite(pytester, …)` writes a conftest (the modeldrop plugin + fixtures.ledger
and a fake facts object read from facts.json), an env file, and gate modules whose gates are
defined in scrambled file order and behave as `behaviour.json` says:
`pass`, `fail:<msg>`, `assert:<msg>`, `skip:<msg>`, `hang` (blocks until killed). Every gate that
actually runs appends its id to trace.txt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests_selftest.support import REPO

CONFTEST = '''
import json
from pathlib import Path

import pytest

from modeldrop import plugin

pytest_plugins = ["modeldrop.plugin", "sandbox.pytest_plugin", "fixtures.ledger"]


class FakeFacts:
    """facts.json: {"hub_commit": ..., "exo": {"1": ...}, "manifests": {"1": ...}}; re-read on every call."""

    def __init__(self, path):
        self.path = path

    def _d(self):
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def hub_commit(self):
        return self._d().get("hub_commit")

    def exo_version(self, k):
        return self._d().get("exo", {}).get(str(k))

    def manifest_digest(self, k):
        return self._d().get("manifests", {}).get(str(k))

    def exo_build(self, k):
        raise NotImplementedError("the plugin's fake suite starts no exo")


def pytest_configure(config):
    config.stash[plugin.FACTS_KEY] = FakeFacts(Path(str(config.rootpath)) / "facts.json")
'''

GATE_HELPERS = '''
import json
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def act(gate, evidence):
    behaviour = json.loads((ROOT / "behaviour.json").read_text()) if (ROOT / "behaviour.json").exists() else {}
    b = behaviour.get(gate, "pass")
    with open(ROOT / "trace.txt", "a") as f:
        f.write(gate + "\\n")
    evidence.note("ran", gate)
    evidence.text("transcript", f"{gate} transcript")
    for key, value in behaviour.get(gate + ":notes", {}).items():
        evidence.note(key, value)
    if b.startswith("fail:"):
        evidence.strongest(b[5:])
        evidence.signatures([{"id": "SIG-1", "title": "fake", "cause": b[5:], "next_command": "echo fix",
                              "matched": True}])
        pytest.fail(b[5:], pytrace=False)
    if b.startswith("assert:"):
        assert False, b[7:]
    if b.startswith("skip:"):
        pytest.skip(b[5:])
    if b == "hang":
        (ROOT / "hanging").write_text(gate)
        threading.Event().wait()
'''

# Deliberately scrambled: cluster gates first, preflight last.
GATES_A = '''
import pytest
from gatehelpers import act


@pytest.mark.gate("chat")
def test_chat(evidence):
    act("chat", evidence)


@pytest.mark.gate("transport")
def test_transport(evidence):
    act("transport", evidence)


@pytest.mark.gate("placement")
def test_placement(evidence):
    act("placement", evidence)


@pytest.mark.gate("cluster")
def test_cluster(evidence):
    act("cluster", evidence)


@pytest.mark.gate("startup")
def test_startup(evidence):
    act("startup", evidence)


@pytest.mark.gate("parity")
def test_parity(evidence):
    act("parity", evidence)
'''

GATES_B = '''
import pytest
from gatehelpers import act


@pytest.mark.gate("node{k}_verify", per_node_from=2)
def test_nodek_verify(k, evidence):
    act(f"node{k}_verify", evidence)


@pytest.mark.gate("node{k}_download", per_node_from=2)
def test_nodek_download(k, evidence):
    act(f"node{k}_download", evidence)


@pytest.mark.gate("node1_canary")
def test_canary(evidence):
    act("node1_canary", evidence)


@pytest.mark.gate("node1_verify")
def test_node1_verify(evidence):
    act("node1_verify", evidence)


@pytest.mark.gate("node1_download")
def test_node1_download(evidence):
    act("node1_download", evidence)


@pytest.mark.gate("preflight")
def test_preflight(evidence):
    act("preflight", evidence)
'''

# the arguments every plugin-kit session starts with
BASE = ("gates", "--model", "org/tiny-model", "--env-file", "test.env")
FULL_ORDER_2 = ["preflight", "node1_download", "node1_verify", "node1_canary", "node2_download",
                "node2_verify", "parity", "startup", "cluster", "placement", "transport", "chat"]


def make_suite(pytester, nodes: str = "studio1,studio2", behaviour: dict | None = None,
               facts: dict | None = None, env_extra: str = "", profiles: dict | None = None) -> Path:
    """Write the fake suite into pytester.path; returns the env file."""
    pytester.makeconftest(CONFTEST)
    (pytester.path / "gates").mkdir(exist_ok=True)
    (pytester.path / "gates" / "gatehelpers.py").write_text(GATE_HELPERS)
    (pytester.path / "gates" / "test_a_cluster.py").write_text(GATES_A)
    (pytester.path / "gates" / "test_b_files.py").write_text(GATES_B)
    (pytester.path / "behaviour.json").write_text(json.dumps(behaviour or {}))
    (pytester.path / "facts.json").write_text(json.dumps(facts or default_facts()))
    if profiles is not None:
        (pytester.path / "profiles.json").write_text(json.dumps(profiles))
    env = pytester.path / "test.env"
    env.write_text(f"NODES={nodes}\nRUN_REPORT_DIR=reports\nPROFILE_PATH=profiles.json\n{env_extra}")
    return env


def default_facts() -> dict:
    return {"hub_commit": "a" * 40, "exo": {"1": "new:1.0", "2": "new:1.0"},
            "manifests": {"1": "digest-1", "2": "digest-2"}}


def set_behaviour(pytester, behaviour: dict) -> None:
    (pytester.path / "behaviour.json").write_text(json.dumps(behaviour))


def set_facts(pytester, facts: dict) -> None:
    (pytester.path / "facts.json").write_text(json.dumps(facts))


def trace(pytester) -> list[str]:
    """Gates that actually ran (in order), and reset the trace."""
    p = pytester.path / "trace.txt"
    out = p.read_text().split() if p.exists() else []
    p.unlink(missing_ok=True)
    return out


def latest(pytester) -> Path:
    return (pytester.path / "reports" / "latest").resolve()


def jsonl(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "ledger.jsonl").read_text().splitlines()]


def handoff_block(folder: Path) -> dict[str, str]:
    from modeldrop.ledger.handoff import parse_block
    return parse_block((folder / "handoff.md").read_text())


def subprocess_env() -> dict[str, str]:
    """Environment for running pytest / the NEXT_COMMAND in a subprocess (repo importable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_TESTRUNUID", None)
    return env


def run_shell(cmd: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a printed command line through /bin/sh, as an operator pasting it would."""
    return subprocess.run(["/bin/sh", "-c", cmd], cwd=cwd, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


PYTEST = [sys.executable, "-m", "pytest"]

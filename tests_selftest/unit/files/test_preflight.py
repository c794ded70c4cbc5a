"""modeldrop.preflight (file side) with fake nodes: no SSH, no sandbox."""

from __future__ import annotations

from types import SimpleNamespace

from modeldrop.config import NodeConfig
from modeldrop.errors import CommandTimeout
from modeldrop.exo.launcher import ExoLauncher
from modeldrop.nodes import LocalNode
from modeldrop.preflight import check_node, reach_problems
from modeldrop.ssh import SSHTarget


class FakeNode:
    """Answers probes from a dict; a probe whose answer is an exception raises it."""

    run_id = None

    def __init__(self, answers: dict, address: str = "10.0.0.1", port: int | None = None):
        self.answers, self._address, self.calls = answers, address, []
        if port is not None:
            self.resolved = SSHTarget(address, port, None, [], None, None)

    def run_probe(self, name: str, args: dict, *, timeout: float = 60) -> dict:
        self.calls.append((name, args))
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def facts(self, *, refresh: bool = False, timeout: float = 30) -> dict:
        return self.run_probe("facts", {}, timeout=timeout)

    def address(self) -> str:
        return self._address


NC = NodeConfig(1, "node1", "me@mac1", "~/Models/org--m", "/opt/hf", "/opt/exo", "~/logs")
CFG = SimpleNamespace(min_free_bytes=None, model_folder="org--m", sources={}, instance_meta="MlxRing")


def test_check_node_turns_a_later_probe_failure_into_a_problem_line():
    node = FakeNode({"facts": {"home": "/Users/me"}, "leftovers": {"found": [], "removed": 0},
                     "tool": CommandTimeout("node1 (me@mac1): `<probe> tool` timed out after 90s", "")})
    out = check_node(node, NC, CFG, None)  # must not raise
    assert len(out.problems) == 1
    assert "node1" in out.problems[0] and "timed out after 90s" in out.problems[0]


def test_reach_uses_each_nodes_ssh_port():
    n1 = FakeNode({"reach": {"results": []}}, "10.0.0.1", port=2222)
    n2 = FakeNode({"reach": {"results": []}}, "10.0.0.2", port=22)
    assert reach_problems({}, {1: n1, 2: n2}, CFG) == ([], [])
    assert n1.calls[0][1]["targets"] == [["10.0.0.2", 22]]
    assert n2.calls[0][1]["targets"] == [["10.0.0.1", 2222]]


def ring_nodes(cut: set[frozenset[int]]) -> dict[int, FakeNode]:
    """Four nodes cabled as a ring (each reaches its two neighbours), minus the cables in `cut`."""
    def result(k: int, j: int) -> dict:
        ok = (k - j) % 4 in (1, 3) and frozenset((k, j)) not in cut
        return {"host": f"10.0.0.{j}", "port": 22, "ok": ok, "errno": None if ok else 65, "error": None}
    return {k: FakeNode({"reach": {"results": [result(k, j) for j in range(1, 5) if j != k]}}, f"10.0.0.{k}")
            for k in range(1, 5)}


def test_reach_on_a_thunderbolt_ring_is_a_note_and_a_cable_out_a_problem():
    """Four Macs on a ring reach only their neighbours: EXO can still place a ring, so the diagonals are notes; with
    cable 4-1 out no ring is left: a problem naming the link. MlxJaccl needs every pair."""
    problems, notes = reach_problems({}, ring_nodes(set()), CFG)
    assert problems == [] and len(notes) == 4 and notes[0].startswith("node1 cannot reach 10.0.0.3:22 (errno 65"), notes
    problems, notes = reach_problems({}, ring_nodes({frozenset((4, 1))}), CFG)
    assert notes == [] and problems[-1].startswith("reach: no ring through all 4 nodes"), problems
    assert "missing link that would close it: node1–node4" in problems[-1]
    jaccl = SimpleNamespace(**{**vars(CFG), "instance_meta": "MlxJaccl"})
    problems, _ = reach_problems({}, ring_nodes(set()), jaccl)
    assert len(problems) == 5 and "every pair" in problems[-1], problems


def _facts_probes(node: LocalNode) -> int:
    return sum(1 for e in node.transcript if e["argv"][:2] == ["<probe>", "facts"])


def test_facts_probed_once_per_node_for_preflight_paths_and_launchers(tmp_path):
    node = LocalNode("node1")
    nc = NodeConfig(1, "node1", "local", str(tmp_path / "org--m"), str(tmp_path / "no-hf"), "/opt/exo", "~/logs")
    out = check_node(node, nc, CFG, None)
    assert out.facts["home"] and any("not found" in p for p in out.problems)
    assert node.expand_path("~/x") == out.facts["home"] + "/x"
    canary, cluster = (ExoLauncher(node, nc, CFG, None) for _ in range(2))
    assert canary.facts()["home"] == cluster.facts()["home"] == out.facts["home"]
    assert _facts_probes(node) == 1


def test_model_dir_mismatch_is_a_preflight_fast_stop(tmp_path, monkeypatch):
    """The model complete in ~/Models/<org--name>, the configured ~/.exo/models/<org--name> empty: preflight stops,
    naming both paths and both ways out, in one `locate` round trip; a partial copy elsewhere does not stop it."""
    from modeldrop.preflight import dir_mismatch_problems
    from tests_selftest.support.modelfiles import make_model

    monkeypatch.setenv("HOME", str(tmp_path))
    node = LocalNode("node1", python_cmd="/usr/bin/python3")
    make_model(tmp_path / "Models" / "org--m")
    configured = tmp_path / ".exo" / "models" / "org--m"
    configured.mkdir(parents=True)
    nc = NodeConfig(1, "node1", "local", str(configured), "/opt/hf", "/opt/exo", "~/logs")
    located = node.run_probe("locate", {"path": str(configured), "model_folder": "org--m"})
    problems = dir_mismatch_problems(nc, located, {"MODEL_DIR_NODE1": "config/model_drop.env:5"})
    assert len(problems) == 1
    p = problems[0]
    assert "model dir mismatch (fast stop)" in p and str(configured) in p and str(tmp_path / "Models" / "org--m") in p
    assert f"set MODEL_DIR_NODE1={tmp_path / 'Models' / 'org--m'}" in p and "mv " in p and "model_drop.env:5" in p
    (configured / "config.json").write_text("{}")  # the configured dir is in use: not a mismatch
    located = node.run_probe("locate", {"path": str(configured), "model_folder": "org--m"})
    assert dir_mismatch_problems(nc, located, {}) == []
    (configured / "config.json").unlink()
    shard = next((tmp_path / "Models" / "org--m").glob("*.safetensors"))
    shard.rename(shard.with_name(shard.name + ".incomplete"))
    located = node.run_probe("locate", {"path": str(configured), "model_folder": "org--m"})
    assert dir_mismatch_problems(nc, located, {}) == [] and located["elsewhere"][0]["complete"] is False


def test_runtime_probe_finds_mlx_beside_exo_or_its_interpreter(tmp_path):
    """A console-script exo whose #! names a venv python: MLX and Python versions come from that venv."""
    venv = tmp_path / "venv"
    (venv / "lib" / "python3.12" / "site-packages" / "mlx-0.30.1.dist-info").mkdir(parents=True)
    (venv / "bin").mkdir()
    exo = tmp_path / "bin" / "exo"
    exo.parent.mkdir()
    exo.write_text(f"#!{venv}/bin/python\nimport exo\n")
    node = LocalNode("node1", python_cmd="/usr/bin/python3")
    r = node.run_probe("runtime", {"exo_cmd": str(exo)})
    assert (r["mlx"], r["python"]) == ("0.30.1", "3.12")
    bare = tmp_path / "other" / "a" / "b" / "c" / "d" / "exo"  # five levels: the search never reaches venv/
    bare.parent.mkdir(parents=True)
    bare.write_text("#!/bin/sh\n")
    assert node.run_probe("runtime", {"exo_cmd": str(bare)})["mlx"] is None


def test_ssh_login_between_nodes_is_tried_both_ways_and_warned_where_keys_do_not_allow_it():
    """The guide's "SSH works both directions": each node logs in to each other node as the control host does
    (user, address, port), keys only and host keys checked; a refusal is one warning line naming both nodes, never
    a problem; local nodes are not tried."""
    from modeldrop.nodes import CommandResult
    from modeldrop.preflight import ssh_login_argv, ssh_login_warnings

    class SSHish(FakeNode):
        def __init__(self, address, port, user, rc, err=""):
            super().__init__({}, address, port)
            self.resolved = SSHTarget(address, port, user, [], None, None)
            self.rc, self.err, self.ran = rc, err, []

        def address(self):
            return self._address

        def run(self, argv, *, timeout):
            self.ran.append(argv)
            return CommandResult(list(argv), self.rc, "", self.err, 0.1)

    n1 = SSHish("10.0.0.1", 22, "ann", 0)
    n2 = SSHish("10.0.0.2", 2222, "bob", 255, "bob@10.0.0.1: Permission denied (publickey).\n")
    warnings, seen = ssh_login_warnings({1: n1, 2: n2}, CFG)
    assert n1.ran == [ssh_login_argv("bob", "10.0.0.2", 2222)]
    assert n1.ran[0][:2] == ["/usr/bin/ssh", "-o"] and "BatchMode=yes" in n1.ran[0] and \
        "StrictHostKeyChecking=yes" in n1.ran[0] and n1.ran[0][-2:] == ["bob@10.0.0.2", "true"]
    assert n2.ran == [ssh_login_argv("ann", "10.0.0.1", 22)]
    assert warnings == ["node2 cannot SSH to node1 (ann@10.0.0.1:22): bob@10.0.0.1: Permission denied (publickey). "
                        "(the guide has SSH work both ways: on node2, put a key node1 authorizes and node1's host key "
                        "in its known_hosts)"]
    assert seen == {"node1->node2": {"rc": 0, "error": None},
                    "node2->node1": {"rc": 255, "error": "bob@10.0.0.1: Permission denied (publickey)."}}
    assert ssh_login_warnings({1: LocalNode("node1"), 2: LocalNode("node2")}, CFG) == ([], {})
def test_a_node_listed_twice_is_named_with_its_twin():
    """The same target twice, or two targets that reach the same machine and user: one line naming both; the same
    machine as another user (the sandbox's nodes) is two nodes."""
    from modeldrop.preflight import NodePreflight, duplicate_problems

    def facts(user: str, uid: int, host: str = "studio", mid: str = "m-1") -> dict:
        return {"hostname": host, "machine_id": mid, "user": user, "uid": uid, "home": f"/Users/{user}"}
    targets = {1: "studio1", 2: "me@10.0.0.5", 3: "studio1", 4: "other@10.0.0.5"}
    cfg = SimpleNamespace(node=lambda k: NodeConfig(k, f"node{k}", targets[k], "/m/org--m", "/hf", "/exo", "/l"))
    pre = {1: NodePreflight(1, facts("me", 501)), 2: NodePreflight(2, facts("me", 501)),
           3: NodePreflight(3, facts("me", 501)), 4: NodePreflight(4, facts("other", 502))}
    assert duplicate_problems(pre, cfg) == [
        "node1 and node2 are the same node: studio1 and me@10.0.0.5 reach the same machine (studio) and user (me); "
        "list each Mac once (NODES or NODE1..NODE4)",
        "node1 and node3 are the same node: the same target studio1; list each Mac once (NODES or NODE1..NODE4)"]
    pre[2] = NodePreflight(2, facts("me", 501, mid="m-2"))  # another Mac with the same user name
    pre[3] = NodePreflight(3, {})  # did not answer: its target still says it
    assert [p.split(":")[0] for p in duplicate_problems(pre, cfg)] == ["node1 and node3 are the same node"]

"""The real-EXO sandbox parts that need no EXO run: the transport stand-in's delivery semantics, the
node shim's address rewrites, the entry point, and a broken or partial install stopping the
sandbox with one line (missing snapshot, no Python 3.13, a failed pip step), injected."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxError
from sandbox.exo_real import install as inst
from sandbox.exo_real.node import STANDIN, entry_point
from tests_selftest.support.slots import SANDBOX_BASE, slot

# This worker's "local" slot's addresses (support/slots.py), on ports no sandbox node uses.
NET = f"127.0.{10 + slot('local')}"
PORT = 52480
MESH_PROG = textwrap.dedent("""
    import asyncio, json, os, sys
    sys.path.insert(0, sys.argv[1])
    from exo_rs import NetworkingHandle, FromSwarm
    ident, ns, subscribe, port = sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
    h = NetworkingHandle.new(ident, ns, port, port + 1)
    async def main():
        if subscribe:
            await h.gossipsub_subscribe("t")
        await h.gossipsub_subscribe("hello")
        got = []
        async def pub():
            for i in range(30):
                await h.gossipsub_publish("t", f"{ident}{i}".encode())
                await h.gossipsub_publish("hello", ident.encode())
                await asyncio.sleep(0.25)
        task = asyncio.create_task(pub())
        try:
            async with asyncio.timeout(float(sys.argv[6])):
                while True:
                    ev = await h.recv()
                    match ev:
                        case FromSwarm.Message(topic, data):
                            got.append([topic, data.decode()])
                        case FromSwarm.Connection(connected):
                            got.append(["conn", connected])
        except TimeoutError:
            pass
        print(json.dumps(got), flush=True)
    asyncio.run(main())
""")


def mesh_node(ident: str, k: int, ns: str, subscribe: bool, seconds: float, peers: int = 2,
              unreachable: tuple[int, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "MODELDROP_EXO_NODE_ADDRESS": f"{NET}.{10 + k}",
           "MODELDROP_EXO_PEER_ADDRESSES": ",".join(f"{NET}.{10 + j}" for j in range(1, peers + 1)),
           "MODELDROP_EXO_UNREACHABLE": ",".join(f"{NET}.{10 + j}" for j in unreachable)}
    return subprocess.Popen([sys.executable, "-c", MESH_PROG, str(STANDIN), ident, ns, "1" if subscribe else "0",
                             str(PORT), str(seconds)], env=env, stdout=subprocess.PIPE, text=True)


def events(p: subprocess.Popen) -> list:
    out, _ = p.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


def test_mesh_delivers_to_subscribers_only_never_back_to_the_sender():
    # b outlives a (started later, runs longer), so a never sees b's exit: a link drop in ea is a real one
    a, b = mesh_node("a", 1, "ns", True, 8.0), mesh_node("b", 2, "ns", False, 11.0)
    ea, eb = events(a), events(b)
    assert ["conn", True] in ea and ["conn", True] in eb
    assert ["conn", False] not in ea, "the link stays up longer than the peer timeout"
    assert any(e == ["hello", "b"] for e in ea) and any(e == ["hello", "a"] for e in eb)
    assert not any(e[0] == "hello" and e[1] == "a" for e in ea), "a message never comes back to its sender"
    assert any(e[0] == "t" and e[1].startswith("b") for e in ea), "a subscribes to t: it gets b's messages"
    assert not any(e[0] == "t" for e in eb), "b never subscribed to t: a's messages to t are dropped"


def test_mesh_routes_through_a_neighbour_when_two_nodes_have_no_link():
    """A path a - b - c (the sandbox's ring with a cable out): a and c never link, yet c's messages reach a
    through b, each once, and a's subscription is known at c (c publishes to it)."""
    a = mesh_node("a", 1, "ns", True, 9.0, peers=3, unreachable=(3,))
    b = mesh_node("b", 2, "ns", False, 10.0, peers=3)
    c = mesh_node("c", 3, "ns", False, 9.0, peers=3, unreachable=(1,))
    ea, eb, ec = events(a), events(b), events(c)
    assert [e for e in ea if e[0] == "conn"] == [["conn", True], ["conn", True]], ea  # start, then b only
    from_c = [e[1] for e in ea if e[0] == "t" and e[1].startswith("c")]
    assert from_c and len(from_c) == len(set(from_c)), from_c  # routed through b, each once
    assert any(e == ["hello", "c"] for e in ea) and any(e == ["hello", "a"] for e in ec)
    assert not any(e[0] == "t" for e in eb + ec), "b and c never subscribed to t"


def test_mesh_namespace_mismatch_isolates():
    a, b = mesh_node("a", 1, "ns", True, 3.0), mesh_node("b", 2, "other", True, 3.0)
    ea, eb = events(a), events(b)
    assert ea == [["conn", True]] and eb == [["conn", True]], (ea, eb)


def test_mesh_reports_a_peer_that_goes_away():
    a, b = mesh_node("a", 1, "ns", True, 6.0), mesh_node("b", 2, "ns", True, 2.0)
    events(b)
    ea = events(a)
    conns = [e[1] for e in ea if e[0] == "conn"]
    assert conns[:2] == [True, True] and conns[-1] is False, ea


def test_node_shim_keeps_exo_on_the_node_address(monkeypatch):
    sys.path.insert(0, str(STANDIN))
    try:
        import modeldrop_exo_node as shim
    finally:
        sys.path.remove(str(STANDIN))
    assert shim.own("127.0.9.12", "0.0.0.0:52415") == "127.0.9.12:52415"
    assert shim.own("127.0.9.12", "127.0.9.11:5000") == "127.0.9.11:5000"
    addr = collections.namedtuple("snicaddr", "family address netmask broadcast ptp")
    fake = {"lo": [addr(socket.AF_INET, "127.0.0.1", None, None, None)],
            "eth0": [addr(socket.AF_INET, "10.0.0.5", None, None, None),
                     addr(socket.AF_INET6, "fe80::1", None, None, None)]}
    psutil = types.SimpleNamespace(net_if_addrs=lambda: fake)
    monkeypatch.setitem(sys.modules, "psutil", psutil)
    shim._patch_interfaces("10.0.0.5")
    assert {k: [a.address for a in v] for k, v in psutil.net_if_addrs().items()} == {"lo": ["10.0.0.5"]}


def test_entry_point_runs_exo_main_only_as_main_and_quotes_its_env(tmp_path):
    fake = inst.Install("new", tmp_path, Path(sys.executable), tmp_path, tmp_path / "lib")
    text = entry_point(fake, 2, {"TMPDIR": "/tmp/x y"}, tmp_path / "lib", tmp_path / "cfg.json")
    assert text.startswith("#!/bin/sh\n") and "'/tmp/x y'" in text
    compile(text, "exo", "exec")  # the shell line is a Python string
    assert "if __name__ == '__main__':\n    modeldrop_exo_node.load_faults" in text
    odd = entry_point(fake, 2, {"X": "a'''b"}, tmp_path / "lib", tmp_path / "cfg.json")
    compile(odd, "exo", "exec")
    script = tmp_path / "exo"
    script.write_text(odd.replace("import sys\n", "import os, sys\nprint(os.environ['X']); sys.exit(0)\n", 1))
    script.chmod(0o755)
    out = subprocess.run([str(script)], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "a'''b", out


# -- a broken or partial install: one line, never a traceback, never a node that looks healthy ------------------
def test_missing_snapshot_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(inst, "SNAPSHOTS", tmp_path / "nowhere")
    assert "nowhere" in " ".join(inst.missing_inputs("new"))
    with pytest.raises(inst.InstallError) as e:
        inst.ensure_install("new")
    assert "\n" not in str(e.value) and "missing" in str(e.value)


def test_no_python313_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(inst, "PYTHON_CANDIDATES", ())
    monkeypatch.setenv("MODELDROP_PYTHON313", str(tmp_path))
    assert any("Python 3.13" in m for m in inst.missing_inputs("new"))


def test_auto_falls_back_to_the_emulator_with_one_line_and_real_is_an_error(monkeypatch, tmp_path):
    from sandbox.cluster import SandboxError, pick_exo
    monkeypatch.setattr(inst, "SNAPSHOTS", tmp_path / "nowhere")
    kind, note = pick_exo("auto", "new")
    assert kind == "emulator" and "not available" in note and "\n" not in note
    with pytest.raises(SandboxError, match="--sandbox-exo emulator"):
        pick_exo("real", "new")


@pytest.mark.skipif(inst.find_python313() is None or inst.missing_inputs("new") != [], reason="no real-EXO inputs here")
def test_failed_pip_step_leaves_no_marker_and_the_sandbox_no_exo(monkeypatch, tmp_path):
    """A requirement pip cannot find: InstallError in one line with the rebuild hint, no marker, and
    Sandbox.up() removes the nodes' exo so none looks healthy."""
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    for f in inst.SNAPSHOTS.iterdir():
        (snaps / f.name).symlink_to(f)
    (snaps / "exo-b5375f8.requirements.txt").unlink()
    (snaps / "exo-b5375f8.requirements.txt").write_text("modeldrop-no-such-package==0.0.0\n")
    base = tmp_path / "base"
    base.mkdir()
    (base / "python3.13").symlink_to(inst.BASE / "python3.13")
    monkeypatch.setattr(inst, "SNAPSHOTS", snaps)
    monkeypatch.setattr(inst, "BASE", base)
    with pytest.raises(inst.InstallError) as e:
        inst.ensure_install("new", timeout=300)
    msg = str(e.value)
    assert "\n" not in msg and "pinned requirements" in msg and "--force" in msg, msg
    assert inst.current("new") is None and not (base / "exo-real-new" / inst.MARKER).exists()


def test_a_failed_real_exo_install_leaves_no_node_exo(monkeypatch):
    """A sandbox whose nodes had an exo, brought up again on a real-EXO install that fails: SandboxError in one
    line naming the failure and the rebuild command, and no node keeps an `exo` that would look healthy."""
    n = slot("local")
    root = SANDBOX_BASE / f"broken-real-{n}"
    box = Sandbox(root, n, 1, mode="local", exo="emulator")
    box.up()
    try:
        assert box.node(1).exo_cmd.exists()

        def broken(generation: str, force: bool = False, timeout: float = 0) -> None:
            raise inst.InstallError("real EXO build could not install the pinned requirements (exit 1): "
                                    f"no such package; {inst.REBUILD_HINT}")

        monkeypatch.setattr(inst, "missing_inputs", lambda generation: [])
        monkeypatch.setattr(inst, "ensure_install", broken)
        again = Sandbox(root, n, 1, mode="local", exo="real")
        with pytest.raises(SandboxError) as e:
            again.up()
        assert "\n" not in str(e.value) and "--force" in str(e.value)
        assert not again.node(1).exo_cmd.exists()
    finally:
        box.destroy()


def test_old_generation_stand_in_raises_when_no_peer_subscribes(monkeypatch):
    """v1.0.71's gossipsub raises NoPeersSubscribedToTopicError (its router catches it); ids look like peer ids."""
    monkeypatch.setenv("MODELDROP_EXO_NODE_ADDRESS", f"{NET}.13")
    monkeypatch.setenv("MODELDROP_EXO_PEER_ADDRESSES", "")
    monkeypatch.syspath_prepend(str(STANDIN))
    import exo_pyo3_bindings as b
    key = b.Keypair.generate()
    assert key.to_node_id().startswith("12D3KooW")
    assert b.Keypair.from_bytes(key.to_bytes()).to_node_id() == key.to_node_id()
    handle = b.NetworkingHandle(key, [], PORT + 5)
    handle._mesh.discovery_port = PORT + 6  # not mDNS's 5353 in a test

    async def publish() -> None:
        await handle.gossipsub_subscribe("t")
        await handle.gossipsub_publish("t", b"x")

    with pytest.raises(b.NoPeersSubscribedToTopicError):
        asyncio.run(publish())

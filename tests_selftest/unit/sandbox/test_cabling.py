"""The sandbox's cabling (sandbox/cabling.py): a mesh or a ring of 1-4 nodes, cables taken out, what each node's
emulator.json says it cannot reach, and real EXO's node shim refusing those addresses as a host with no route."""

from __future__ import annotations

import errno
import socket
import sys

import pytest

from sandbox.cabling import Cabling, CablingError
from sandbox.exo_install import NodeExo
from sandbox.exo_real.node import STANDIN
from sandbox.layout import Layout


@pytest.mark.parametrize("n, topology, cut, unreachable", [
    (4, "mesh", (), {1: [], 2: [], 3: [], 4: []}),
    (4, "ring", (), {1: [3], 2: [4], 3: [1], 4: [2]}),
    (4, "ring", [(4, 1)], {1: [3, 4], 2: [4], 3: [1], 4: [1, 2]}),
    (3, "ring", (), {1: [], 2: [], 3: []}),  # a ring of three links every pair
    (3, "ring", [(1, 3)], {1: [3], 2: [], 3: [1]}),
    (2, "mesh", [(2, 1)], {1: [2], 2: [1]}),
    (1, "ring", (), {1: []})])
def test_cabling_says_who_reaches_whom(n, topology, cut, unreachable):
    cabling = Cabling.make(n, topology, cut)
    assert {k: cabling.unreachable(k) for k in range(1, n + 1)} == unreachable
    assert all(cabling.linked(a, b) == cabling.linked(b, a) for a in range(1, n + 1) for b in range(1, n + 1))


@pytest.mark.parametrize("topology, cut, said", [
    ("star", (), "sandbox topology 'star': use one of mesh, ring"),
    ("ring", [(1, 5)], "cable 1-5: a cable joins two different nodes of 1..4"),
    ("ring", [(2, 2)], "cable 2-2: a cable joins two different nodes of 1..4")])
def test_bad_cabling_is_one_line(topology, cut, said):
    with pytest.raises(CablingError) as err:
        Cabling.make(4, topology, cut)
    assert str(err.value) == said


def test_emulator_json_lists_the_addresses_a_node_cannot_reach(tmp_path):
    lay = Layout(tmp_path, 149, 4, "ssh")
    node_exo = NodeExo(lay, "new", "emulator")
    node_exo.cabling = Cabling.make(4, "ring", [(4, 1)])
    assert node_exo.config(1)["unreachable"] == [lay.address(3), lay.address(4)]
    assert node_exo.config(2)["unreachable"] == [lay.address(4)]
    node_exo.cabling = Cabling.make(4, "mesh")
    assert all(node_exo.config(k)["unreachable"] == [] for k in range(1, 5))


def test_real_exo_shim_refuses_unreachable_addresses(monkeypatch):
    """With `MODELDROP_EXO_UNREACHABLE` set, connect() to such an address fails with EHOSTUNREACH (so EXO's
    /node_id probe there fails and no topology edge is made); other addresses connect as before."""
    monkeypatch.setattr(socket.socket, "connect", socket.socket.connect)  # restored after the test
    monkeypatch.setattr(socket.socket, "connect_ex", socket.socket.connect_ex)
    monkeypatch.syspath_prepend(str(STANDIN))
    sys.modules.pop("modeldrop_exo_node", None)
    import modeldrop_exo_node as shim
    shim._patch_connect()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    monkeypatch.setenv(shim.UNREACHABLE_ENV, "127.0.0.1,127.0.0.3")
    with socket.socket() as s, pytest.raises(OSError) as err:
        s.connect(("127.0.0.1", port))
    assert err.value.errno == errno.EHOSTUNREACH
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) == errno.EHOSTUNREACH
    monkeypatch.setenv(shim.UNREACHABLE_ENV, "127.0.0.3")
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    listener.close()

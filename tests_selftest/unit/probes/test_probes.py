"""Probes run for real through LocalNode with /usr/bin/python3 (3.11) and, when present, a 3.9 interpreter;
the Python 3.9 floor is checked statically with vermin and ruff."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from modeldrop import probes
from modeldrop.errors import NodeError
from modeldrop.nodes import LocalNode
from modeldrop.probes import sockets as sockets_probe
from tests_selftest.support import REPO
from tests_selftest.support.modelfiles import make_model

PY39 = next((p for p in (shutil.which("python3.9"), str(Path.home() / ".pyenv/versions/3.9.18/bin/python3.9"))
             if p and os.access(p, os.X_OK) and "shims" not in p), None)
PYTHONS = ["/usr/bin/python3"] + ([PY39] if PY39 else [])
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(params=PYTHONS, ids=lambda p: "py39" if p == PY39 else "py3")
def node(request) -> LocalNode:
    return LocalNode("node1", python_cmd=request.param)


def test_probes_are_python39_stdlib_vermin():
    vermin = shutil.which("vermin") or str(VENV_BIN / "vermin")
    r = subprocess.run([vermin, "-t=3.9-", "--no-tips", "--violations", "--eval-annotations",
                        str(REPO / "modeldrop" / "probes")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_probes_are_python39_ruff():
    ruff = shutil.which("ruff") or str(VENV_BIN / "ruff")
    r = subprocess.run([ruff, "check", "--isolated", "--target-version", "py39", "--select", "E9,F,UP,FA",
                        "--ignore", "UP", str(REPO / "modeldrop" / "probes")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(PY39 is None, reason="no python3.9 on this machine")
def test_every_probe_compiles_under_39():
    for name in probes.PROBES:
        src = probes.probe_payload(name, {}).decode()
        r = subprocess.run([PY39, "-c", "import sys; compile(sys.stdin.read(), 'probe', 'exec')"], input=src,
                           capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)


def test_facts(node):
    f = node.run_probe("facts", {})
    assert f["platform"] == "linux" and f["python"] and f["home"] == os.path.expanduser("~")
    assert f["ssh_server_addr"] is None and f["hostname"] == socket.gethostname()
    assert f["python_version"].startswith("3.9") == (node.python_cmd == PY39)


def test_tool(node, tmp_path):
    missing = node.run_probe("tool", {"path": "~/no/such/hf", "args": ["version"], "timeout": 5, "env": {}})
    assert missing["expanded"] == os.path.expanduser("~/no/such/hf") and not missing["exists"]
    assert missing["error"] == "not found"
    ok = node.run_probe("tool", {"path": "/bin/sh", "args": ["-c", 'echo "v=$V"'], "timeout": 5, "env": {"V": "7"}})
    assert ok["rc"] == 0 and ok["stdout_head"] == "v=7\n" and ok["executable"]
    slow = node.run_probe("tool", {"path": "/bin/sleep", "args": ["10"], "timeout": 0.5, "env": {}})
    assert slow["rc"] is None and "timed out" in slow["error"] and slow["duration_s"] < 5


def test_disk_fs_tail_dirsize(node, tmp_path):
    d = node.run_probe("disk", {"path": str(tmp_path / "a" / "b")})
    assert d["nearest_existing"] == str(tmp_path) and d["free_bytes"] > 0 and d["parent_writable"]
    assert node.run_probe("fs", {"op": "mkdir", "path": str(tmp_path / "a" / "b")})["ok"]
    assert node.run_probe("fs", {"op": "touch", "path": str(tmp_path / "a" / "b" / "f")})["ok"]
    assert node.run_probe("fs", {"op": "exists", "path": str(tmp_path / "a" / "b" / "f")})["ok"]
    batch = node.run_probe("fs", {"ops": [["mkdir", str(tmp_path / "c")], ["touch", str(tmp_path / "c" / "m")],
                                          ["exists", str(tmp_path / "nope")]]})
    assert not batch["ok"] and [r["ok"] for r in batch["results"]] == [True, True, False]
    assert (tmp_path / "c" / "m").exists()
    log = tmp_path / "log.txt"
    log.write_text("x" * 100 + "tail-end")
    t = node.run_probe("tail", {"path": str(log), "max_bytes": 8})
    assert (t["text"], t["size"], t["exists"]) == ("tail-end", 108, True)
    # `match`: the matching lines since the mark however far back (a ring line logged at placement, then a
    # benchmark's worth of log), not the tail; one before the mark is not this run's
    log.write_text("rank 0 hostfile: /old hosts: [a]\n")
    mark = {"inode": log.stat().st_ino, "size": log.stat().st_size}
    with log.open("a") as f:
        f.write("rank 0 hostfile: /tmp/x hosts: [a, b]\n" + "noise\n" * 5000 + "[ring] Couldn't connect (error: 61)\n")
    rx = [r"rank \d+ hostfile:", r"\[ring\] Couldn't connect"]
    m = node.run_probe("tail", {"path": str(log), "max_bytes": 200, "mark": mark, "match": rx})
    assert m["text"] == "rank 0 hostfile: /tmp/x hosts: [a, b]\n[ring] Couldn't connect (error: 61)", m["text"]
    assert node.run_probe("tail", {"path": str(log), "max_bytes": 40, "mark": mark, "match": rx})["text"] == \
        "[ring] Couldn't connect (error: 61)"  # the newest max_bytes of the matches
    # `files`: several logs in one round trip, each with its own mark, in order (a missing one says so)
    other = tmp_path / "other.txt"
    other.write_text("before\n")
    other_mark = {"inode": other.stat().st_ino, "size": other.stat().st_size}
    with other.open("a") as f:
        f.write("after\n")
    both = node.run_probe("tail", {"files": [{"path": str(other), "mark": other_mark},
                                             {"path": str(tmp_path / "nope.log")}, {"path": str(log), "mark": None}],
                                   "max_bytes": 20})["files"]
    assert [(r["exists"], r["text"]) for r in both[:2]] == [(True, "after\n"), (False, "")]
    assert both[0]["from"] == other_mark["size"] and both[2]["text"] == log.read_text()[-20:]
    dl = tmp_path / "m" / ".cache" / "huggingface" / "download"
    dl.mkdir(parents=True)
    (dl / "abc.incomplete").write_bytes(b"1" * 1000)
    (tmp_path / "m" / "config.json").write_bytes(b"2" * 24)
    assert node.run_probe("dirsize", {"path": str(tmp_path / "m")}) | {"expanded": ""} == {
        "bytes": 1024, "files": 2, "expanded": ""}


def test_manifest_reads_tree_metadata_headers(node, tmp_path):
    d = tmp_path / "org--name"
    tree = make_model(d, n_shards=2)
    (d / "model.gguf").write_bytes(b"GGUF" + b"\0" * 28)
    m = node.run_probe("manifest", {"path": str(d), "model_folder": "org--name", "search_alternates": False})
    assert [f["path"] for f in m["files"]] == sorted(list(tree) + ["model.gguf"])
    assert all(h["ok"] for h in m["safetensors"].values()) and m["gguf"] == {"model.gguf": {"magic_ok": True}}
    assert m["index"]["weight_files"] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert set(m["metadata"]) == set(tree) and m["tree"]["commit"].startswith("c0ffee")
    assert m["tree"]["files"]["config.json"]["size"] == tree["config.json"]["size"]
    assert any(c["path"].endswith("config.json.lock") for c in m["cache_files"])


def test_manifest_missing_dir(node, tmp_path):
    m = node.run_probe("manifest", {"path": str(tmp_path / "nope"), "model_folder": "nope", "search_alternates": True})
    assert m["exists"] is False and m["files"] == []


def test_hashes_match_hashlib(node, tmp_path):
    files = {"a.bin": os.urandom(9 * 1024 * 1024 + 3), "sub/b.bin": b"hello"}
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    h = node.run_probe("hashes", {"path": str(tmp_path), "files": [*files, "gone.bin"], "workers": 2})
    assert h["sha256"] == {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    assert h["bytes"] == sum(map(len, files.values())) and "gone.bin" in h["errors"]


def test_ports_and_sockets_see_a_listener(node):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = node.run_probe("ports", {"port": port, "addresses": ["127.0.0.1"]})
        assert not p["free"] and p["listening_on"] == ["127.0.0.1"]
        assert os.getpid() in [h["pid"] for h in p["holders"]]
        socks = node.run_probe("sockets", {"port": port})["sockets"]
        assert {"local": f"127.0.0.1:{port}", "remote": "0.0.0.0:0", "state": "LISTEN"} in socks
        assert not [x for x in socks if x["state"] == "ESTABLISHED"]  # the probe never connected
    assert node.run_probe("ports", {"port": port, "addresses": ["127.0.0.1"]})["free"]


def test_ports_ignores_listeners_on_other_addresses(node):
    """Sandbox nodes share one host: a listener on another node's address is not this node's conflict."""
    with socket.socket() as s:
        s.bind(("127.0.97.5", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = node.run_probe("ports", {"port": port, "addresses": ["127.0.0.1"]})
        assert p["free"] and p["holders"] == [] and p["other_listeners"][0]["local"] == "127.0.97.5"
        assert p["other_listeners"][0]["pid"] == os.getpid()
        mine = node.run_probe("ports", {"port": port, "addresses": ["127.0.0.1", "127.0.97.5"]})
        assert not mine["free"] and mine["listening_on"] == ["127.0.97.5"]
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen(1)
        p = node.run_probe("ports", {"port": s.getsockname()[1], "addresses": ["127.0.97.6"]})
        assert not p["free"] and p["holders"][0]["local"] == "0.0.0.0"


NETSTAT_SEQUOIA = """Active Internet connections (including servers)
Proto Recv-Q Send-Q  Local Address          Foreign Address        (state)
tcp4       0      0  192.168.1.20.52415     192.168.1.21.61234     ESTABLISHED
tcp46      0      0  *.52415                *.*                    LISTEN
tcp4       0      0  127.0.0.1.8080         *.*                    LISTEN
tcp6       0      0  fe80::1%lo0.52415      *.*                    LISTEN
"""


def test_ports_does_not_test_the_ssh_address_twice(monkeypatch):
    """sshd may report the address as IPv4-mapped IPv6: the plain form is what is compared and added."""
    from modeldrop.probes import ports as ports_probe
    monkeypatch.setenv("SSH_CONNECTION", "::ffff:127.0.0.1 50000 ::ffff:127.0.0.1 22")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert ports_probe.main({"port": port, "addresses": ["127.0.0.1"]})["addresses"] == ["127.0.0.1"]


def test_netstat_parser_by_header():
    rows = sockets_probe.parse_netstat(NETSTAT_SEQUOIA, 52415)
    assert rows == [{"local": "192.168.1.20:52415", "remote": "192.168.1.21:61234", "state": "ESTABLISHED"},
                    {"local": "*:52415", "remote": "*:*", "state": "LISTEN"},
                    {"local": "fe80::1%lo0:52415", "remote": "*:*", "state": "LISTEN"}]


def test_procs_by_exe_and_pid(node):
    me = node.run_probe("procs", {"pids": [os.getpid()], "exe_paths": None})["procs"]
    assert len(me) == 1 and me[0]["pid"] == os.getpid() and me[0]["ppid"] == os.getppid()
    by_exe = node.run_probe("procs", {"pids": None, "exe_paths": [sys.executable]})["procs"]
    assert os.getpid() in [p["pid"] for p in by_exe]


def test_spawn_env_and_stop_escalates_to_kill(node, tmp_path):
    script = "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" \
             "print(os.environ.get('KEEP'), os.environ.get('DROP'), flush=True)\ntime.sleep(120)\n"
    (tmp_path / "stubborn.py").write_text(script)
    env_before = dict(os.environ)
    os.environ["DROP"] = "should-go"
    try:
        child = node.run_probe("spawn", {"argv": [sys.executable, str(tmp_path / "stubborn.py")], "env": {"KEEP": "k"},
                                         "unset_env": ["DROP"], "cwd": str(tmp_path),
                                         "log_path": str(tmp_path / "s.log"), "pid_file": None})
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    try:
        assert os.getpgid(child["pid"]) == child["pid"]  # its own session and group
        out = node.run_probe("procs", {"pids": [child["pid"]], "exe_paths": None})["procs"]
        assert out and out[0]["cmdline"][1] == str(tmp_path / "stubborn.py")
        res = node.run_probe("stop", {"pid": child["pid"], "expect_start": child["start"],
                                      "expect_argv0": sys.executable, "grace_s": 0.5})
        assert res["result"] == "stopped-kill", res
        assert (tmp_path / "s.log").read_text().startswith("k None")
    finally:
        try:
            os.killpg(child["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_stop_signals_only_the_pid_of_a_job_leader_not_its_group(node):
    """A process leading a group but not a session (a shell job: `exo | tee`) is stopped alone, never its group."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    leader = subprocess.Popen(sleeper, process_group=0)
    sibling = subprocess.Popen(sleeper, process_group=leader.pid)
    try:
        row = node.run_probe("procs", {"pids": [leader.pid], "exe_paths": None})["procs"][0]
        res = node.run_probe("stop", {"pid": leader.pid, "expect_start": row["start"], "grace_s": 5})
        assert res["result"] == "stopped-term" and "(group)" not in res["detail"], res
        assert leader.wait(5) == -signal.SIGTERM and sibling.poll() is None
    finally:
        for p in (leader, sibling):
            p.kill()
            p.wait()


def test_stop_without_identity_refuses(node):
    res = node.run_probe("stop", {"pid": os.getpid(), "grace_s": 1})
    assert res["result"] == "mismatch" and "without an identity" in res["detail"]


def test_probe_failure_is_one_nodeerror(node):
    with pytest.raises(NodeError, match=r"probe tail failed \(rc 1\): .*KeyError"):
        node.run_probe("tail", {})


def test_cut_short_result_line_is_one_nodeerror(tmp_path):
    """A result line cut off mid-JSON (probe killed while writing) is a NodeError, not a JSONDecodeError."""
    assert probes.parse_result(probes.RESULT_MARKER + '{"ok": tr') is None
    assert probes.parse_result(probes.RESULT_MARKER + "[1, 2]") is None
    fake = tmp_path / "fakepy"
    fake.write_text("#!/bin/sh\ncat >/dev/null\nprintf '%s{\"ok\": tr' '" + probes.RESULT_MARKER + "'\n")
    fake.chmod(0o755)
    with pytest.raises(NodeError, match=r"probe fs failed \(rc 0\)"):
        LocalNode("node1", python_cmd=str(fake)).run_probe("fs", {"op": "exists", "path": "/"})


def test_default_python_pick_is_cached():
    n = LocalNode("node1")
    assert n.run_probe("fs", {"op": "exists", "path": "/"})["ok"]
    assert n._picked_python and n.transcript[-1]["argv"][2] == "(python3 pick)"
    n.run_probe("fs", {"op": "exists", "path": "/"})
    assert n.transcript[-1]["argv"][2] == f"({n._picked_python})"


def test_picked_marker_parsing():
    picked, rest = probes.parse_picked(f"warn\n{probes.PICKED_MARKER}/usr/bin/python3\nTraceback\n")
    assert picked == "/usr/bin/python3" and rest == "warn\nTraceback\n"
    assert "xcode-select -p" in probes.PYTHON_PICK and "exit 97" in probes.PYTHON_PICK


def test_bsd_ps_parser_agrees_with_proc():
    """The macOS path (ps -o pid=,ppid=,stat=,lstart=,command=) parsed with procps ps gives the same
    identity as /proc: same ppid, start within the stop probe's tolerance."""
    from modeldrop.probes import _proc
    if not shutil.which("ps"):
        pytest.skip("no ps")
    (bsd,) = _proc._darwin_ps([os.getpid()])
    linux = _proc._linux_info(os.getpid())
    assert bsd["pid"] == linux["pid"] and bsd["ppid"] == linux["ppid"]
    assert abs(bsd["start"] - linux["start"]) <= _proc.START_TOLERANCE_S
    assert bsd["cmdline"][0] == linux["cmdline"][0]


def _fake_tools(bindir: Path, uname: str, xcode_dir: str | None) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    (bindir / "uname").write_text(f"#!/bin/sh\necho {uname}\n")
    xs = f"#!/bin/sh\necho {xcode_dir}\n" if xcode_dir else "#!/bin/sh\necho 'xcode-select: error' >&2\nexit 2\n"
    (bindir / "xcode-select").write_text(xs)
    for f in bindir.iterdir():
        f.chmod(0o755)


@pytest.mark.skipif(any(Path(p).exists() for p in ("/opt/homebrew/bin/python3", "/usr/local/bin/python3")),
                    reason="a python at a preferred path would win")
def test_python_pick_on_a_mac_without_clt_never_runs_the_stub(tmp_path):
    """Darwin without Command Line Tools: /usr/bin/python3 (the stub) is not run; exit 97 + NO_PYTHON."""
    _fake_tools(tmp_path / "bin", "Darwin", None)
    r = subprocess.run(["/bin/sh", "-c", probes.PYTHON_PICK], input=b"print('ran')\n", capture_output=True,
                       env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})
    assert r.returncode == probes.NO_PYTHON_RC and b"NO_PYTHON" in r.stderr and b"ran" not in r.stdout


@pytest.mark.skipif(any(Path(p).exists() for p in ("/opt/homebrew/bin/python3", "/usr/local/bin/python3")),
                    reason="a python at a preferred path would win")
def test_python_pick_on_a_mac_with_clt_uses_the_developer_dir(tmp_path):
    dev = tmp_path / "CommandLineTools"
    (dev / "usr" / "bin").mkdir(parents=True)
    (dev / "usr" / "bin" / "python3").symlink_to("/usr/bin/python3")
    _fake_tools(tmp_path / "bin", "Darwin", str(dev))
    r = subprocess.run(["/bin/sh", "-c", probes.PYTHON_PICK], input=b"print('ran')\n", capture_output=True,
                       env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})
    picked, _ = probes.parse_picked(r.stderr.decode())
    assert r.returncode == 0 and r.stdout == b"ran\n" and picked == f"{dev}/usr/bin/python3"

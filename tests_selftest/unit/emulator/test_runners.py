"""EXO emulator runners and chat: lifecycle to Ready, ring sockets, real mlx-lm chat, failures, chat faults."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time

import pytest

from tests_selftest.support.emulator_fixtures import (  # noqa: F401
    MODEL_ID,
    EmuNode,
    emu_factory,
    fresh_subnet,
    instance_body,
    place_and_create,
    sse_lines,
    tiny_model,
    wait_cluster,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.sandbox_run
ORDER = ["RunnerIdle", "RunnerConnecting", "RunnerConnected", "RunnerLoading", "RunnerLoaded", "RunnerWarmingUp",
         "RunnerReady"]


def tcp_states(port: int) -> list[tuple[str, str]]:
    """(local ip, state) of every IPv4 TCP socket with local port ``port`` (from /proc/net/tcp)."""
    out = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            ip_hex, port_hex = local.split(":")
            if int(port_hex, 16) == port:
                ip = socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1])
                out.append((ip, {"01": "ESTABLISHED", "0A": "LISTEN"}.get(state, state)))
    return out


def single(emu_factory, tiny_model, name: str, faults: dict | None = None, *flags: str,  # noqa: F811
           stage: bool = True) -> EmuNode:
    addr = f"127.{fresh_subnet()}.11"
    n = emu_factory(name, addr, [addr], faults=faults or {})
    if stage:
        n.stage_model(tiny_model)
    else:
        n.stage_model(tiny_model)
        import shutil

        shutil.rmtree(n.data_home / "models")
    n.start(*flags)
    wait_cluster([n])
    return n


def test_two_node_ring_to_ready_and_chat(emu_factory, tiny_model) -> None:  # noqa: F811
    sub = fresh_subnet()
    addrs = [f"127.{sub}.11", f"127.{sub}.12"]
    nodes = [emu_factory(f"r{i}", addrs[i], addrs) for i in range(2)]
    t0 = time.monotonic()
    for n in nodes:
        n.stage_model(tiny_model)
        n.start()
    ids = wait_cluster(nodes)
    print(f"\nMEASURE start -> 2-node cluster with edges: {time.monotonic() - t0:.2f}s")
    a, b = nodes
    code, inst = a.get(f"/instance/placement?model_id={MODEL_ID}&min_nodes=2")
    assert code == 200
    body = instance_body(inst)
    iid, port = body["instanceId"], body["ephemeralPort"]
    assert set(body["hostsByNode"]) == set(ids)
    t1 = time.monotonic()
    assert a.post("/instance", {"instance": inst})[0] == 200
    seen: dict[str, list[str]] = {rid: [] for rid in body["shardAssignments"]["runnerToShard"]}
    saw_empty_runners = False

    def track() -> bool:
        nonlocal saw_empty_runners
        s = b.state()
        if iid in s["instances"] and not s["runners"]:
            saw_empty_runners = True
        for rid in seen:
            st = next(iter(s["runners"].get(rid, {"-": 0})))
            if st != "-" and (not seen[rid] or seen[rid][-1] != st):
                seen[rid].append(st)
        return all(v and v[-1] in ("RunnerReady", "RunnerRunning") for v in seen.values())

    wait_for(track, 90, "runners ready", 0.02)
    print(f"MEASURE POST /instance -> all runners Ready: {time.monotonic() - t1:.2f}s")
    for _rid, statuses in seen.items():
        idx = [ORDER.index(s) for s in statuses if s in ORDER]
        assert idx == sorted(idx), statuses
    # ring: hostfile lines match hostsByNode; only ESTABLISHED sockets on P afterwards
    for n, nid in zip(nodes, ids, strict=False):
        m = re.search(r"rank (\d+) hostfile: \S+ hosts: (\[.*\])", n.log())
        assert m, n.log()[-2000:]
        expect = [f"{h['ip']}:{h['port']}" for h in body["hostsByNode"][nid]]
        assert json.loads(m.group(2)) == expect
        assert f"Rank {m.group(1)} mlx distributed initialization complete" in n.log()
        assert "runner ready" in n.log()
    states = tcp_states(port)
    assert not [s for s in states if s[1] == "LISTEN"], states
    assert sorted(ip for ip, st in states if st == "ESTABLISHED") == sorted(addrs), states
    # chat through the non-rank-0 node and the rank-0 node
    msgs = [{"role": "user", "content": "hello"}]
    for n in nodes:
        code, reply = n.post("/v1/chat/completions", {"model": MODEL_ID, "messages": msgs, "max_tokens": 12})
        assert code == 200 and reply["object"] == "chat.completion", reply
        assert reply["usage"]["completion_tokens"] == 12 and reply["choices"][0]["finish_reason"] == "length"
        assert reply["choices"][0]["message"]["content"]
    lines = sse_lines(b, "/v1/chat/completions", {"model": MODEL_ID, "messages": msgs, "max_tokens": 8, "stream": True})
    assert lines[0] == ": keep-alive" and lines[-1] == "data: [DONE]"
    assert any(ln.startswith(": prefill_progress {\"PrefillProgressChunk\"") for ln in lines)
    stats = [ln for ln in lines if ln.startswith(": generation_stats ")]
    assert stats and json.loads(stats[0][len(": generation_stats "):])["peak_memory_usage"].keys() == {"in_bytes"}
    chunks = [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")]
    assert all(c["object"] == "chat.completion" and c["choices"][0]["delta"]["role"] == "assistant" for c in chunks)
    assert [("usage" in c) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["usage"]["completion_tokens"] == 8
    # bench: EOS banned, exactly max_tokens, stats in the body
    code, bench = a.post("/bench/chat/completions", {"model": MODEL_ID, "messages": msgs, "max_tokens": 64})
    assert code == 200 and bench["usage"] is None and isinstance(bench["power_usage"], dict), bench  # as EXO's
    gs = bench["generation_stats"]
    assert gs["generation_tokens"] == 64 and set(gs["peak_memory_usage"]) == {"inBytes"}
    print(f"MEASURE emulator bench generation_tps (server-side): {gs['generation_tps']:.1f}")
    # delete: 200 then 404 once it is gone, runners drop out
    code, d = a.post_delete(f"/instance/{iid}") if hasattr(a, "post_delete") else _delete(a, iid)
    assert code == 200 and d["instance_id"] == iid
    wait_for(lambda: a.get(f"/instance/{iid}")[0] == 404, 20, "instance gone")
    wait_for(lambda: not (set(seen) & set(b.state()["runners"])), 20, "runners gone")
    _ = saw_empty_runners


def _delete(node: EmuNode, iid: str):
    from tests_selftest.support.emulator_fixtures import http

    return http("DELETE", f"{node.url}/instance/{iid}")


def test_truncated_shard_fails_retries_then_deletes(emu_factory, tiny_model) -> None:  # noqa: F811
    n = single(emu_factory, tiny_model, "trunc")
    shard = n.data_home / "models" / MODEL_ID.replace("/", "--") / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])
    iid = place_and_create(n, 1)
    rid_holder: list[str] = []

    def failed() -> dict | None:
        s = n.state()
        inst = s["instances"].get(iid)
        if inst is not None and not rid_holder:
            rid_holder.extend(instance_body(inst)["shardAssignments"]["runnerToShard"])
        for rid in rid_holder:
            st = s["runners"].get(rid, {})
            if "RunnerFailed" in st:
                return st["RunnerFailed"]
        return None

    fail = wait_for(failed, 60, "RunnerFailed", 0.05)
    assert fail["errorMessage"].startswith("Terminated (exitcode=1\nRunner error: "), fail
    assert "diagnostics" in fail
    wait_for(lambda: iid not in n.state()["instances"], 90, "instance deleted after retries", 0.2)
    log = n.log()
    assert f"Instance {iid} exceeded 5 retries, requesting deletion" in log
    assert log.count("Worker plan: CreateRunner") == 5
    assert re.search(r"Runner \S+ crashed with critical exception", log)
    assert "Runner terminated with exitcode=1\nRunner error: " in log
    assert "RunnerFailed" in n.state()["runners"].get(rid_holder[0], {})  # stale entry may remain


@pytest.mark.parametrize("errno", [61, 60])
def test_ring_connect_error(emu_factory, tiny_model, errno: int) -> None:  # noqa: F811
    sub = fresh_subnet()
    addrs = [f"127.{sub}.11", f"127.{sub}.12"]
    nodes = [emu_factory(f"e{i}", addrs[i], addrs, faults={"ring_connect_error": errno} if i == 1 else {})
             for i in range(2)]
    for n in nodes:
        n.stage_model(tiny_model)
        n.start()
    wait_cluster(nodes)
    place_and_create(nodes[0], 2)

    def failure() -> str | None:
        for st in nodes[0].state()["runners"].values():
            if "RunnerFailed" in st:
                return st["RunnerFailed"]["errorMessage"]
        return None

    msg = wait_for(failure, 60, "ring failure", 0.1)
    assert msg.startswith("Terminated (exitcode=1\nRunner error: RuntimeError: [ring] Couldn't connect "
                          f"(error: {errno})")
    assert f"[ring] Couldn't connect (error: {errno})" in nodes[1].log()


def test_never_ready_and_offline_missing(emu_factory, tiny_model) -> None:  # noqa: F811
    slow = single(emu_factory, tiny_model, "never", {"runner_never_ready": "loading"})
    iid = place_and_create(slow, 1)
    wait_for(lambda: any("RunnerLoading" in s for s in slow.state()["runners"].values()), 60, "loading")
    time.sleep(1.0)
    assert all("RunnerLoading" in s for s in slow.state()["runners"].values())
    off = single(emu_factory, tiny_model, "offline", None, "--offline", stage=False)
    place_and_create(off, 1)

    def dl_failed() -> dict | None:
        for d in off.state()["downloads"].get(off.node_id(), []):
            if "DownloadFailed" in d:
                return d["DownloadFailed"]
        return None

    failed = wait_for(dl_failed, 30, "DownloadFailed")
    assert failed["errorMessage"] == f"Model files not found locally in offline mode: {MODEL_ID}"
    assert all("RunnerIdle" in s for s in off.state()["runners"].values())
    _ = iid


def test_chat_faults_on_one_node(emu_factory, tiny_model) -> None:  # noqa: F811
    faults = {"chat_truncated_body": True, "stream_error_chunk": True, "token_rate": 20, "state_runner_lag": 30}
    n = single(emu_factory, tiny_model, "faulty", faults)
    iid = place_and_create(n, 1)
    msgs = [{"role": "user", "content": "hi"}]
    # state_runner_lag: nodeToRunner {} and no runners while chat works
    code, inst = n.get(f"/instance/{iid}")
    assert code == 200 and instance_body(inst)["shardAssignments"]["nodeToRunner"] == {}
    assert n.state()["runners"] == {}
    # truncated non-stream body (HTTP 200, incomplete chunked read)
    conn = http.client.HTTPConnection(n.address, n.api_port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": MODEL_ID, "messages": msgs, "max_tokens": 4}),
                 {"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    # stream ends with exo's error chunk then [DONE]
    lines = sse_lines(n, "/v1/chat/completions", {"model": MODEL_ID, "messages": msgs, "max_tokens": 8, "stream": True})
    assert lines[-1] == "data: [DONE]"
    err = json.loads(lines[-2][6:])
    assert set(err["error"]) == {"message", "type", "code"} and err["error"]["type"] == "InternalServerError"


def test_stall_mid_stream_and_token_rate(emu_factory, tiny_model) -> None:  # noqa: F811
    n = single(emu_factory, tiny_model, "stall", {"stall_mid_stream": 3})
    place_and_create(n, 1)
    wait_ready(n, next(iter(n.state()["instances"])))
    sock = socket.create_connection((n.address, n.api_port), timeout=10)
    body = json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], "max_tokens": 20,
                       "stream": True}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    buf = b""
    deadline = time.monotonic() + 15
    while buf.count(b": keep-alive") < 3 and time.monotonic() < deadline:
        buf += sock.recv(65536)
    sock.close()
    text = buf.decode(errors="replace")
    assert text.count("data: {") == 2 and "[DONE]" not in text  # 3rd token held back, stall after it
    assert text.count(": keep-alive") >= 3
    rate = single(emu_factory, tiny_model, "rate", {"token_rate": 10})
    iid = place_and_create(rate, 1)
    wait_ready(rate, iid)
    t0 = time.monotonic()
    code, reply = rate.post("/v1/chat/completions", {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}],
                                                     "max_tokens": 10})
    assert code == 200 and reply["usage"]["completion_tokens"] == 10
    assert time.monotonic() - t0 >= 0.85


def test_console_script_launcher_without_main_guard(emu_factory, tiny_model, tmp_path) -> None:  # noqa: F811
    """exo installed as a console script: the runner (spawn) must not re-run the launcher's CLI."""
    from tests_selftest.support.emulator_fixtures import EMULATOR_PYTHON, SANDBOX

    script = tmp_path / "exo"
    script.write_text(f"#!{EMULATOR_PYTHON}\nimport sys\nsys.path.insert(0, {str(SANDBOX.parent)!r})\n"
                      "from sandbox.exo_emulator.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    addr = f"127.{fresh_subnet()}.11"
    n = emu_factory("script", addr, [addr])
    n.stage_model(tiny_model)
    n.start(script=script)
    wait_cluster([n])
    wait_ready(n, place_and_create(n, 1), 60)
    assert "PidfileError" not in n.stderr_path.read_text()


def _mini_hub(model_dir) -> tuple:
    """A minimal HF-style file server for one repo (tree + resolve), on 127.0.0.1."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    files = sorted(p for p in model_dir.iterdir() if p.is_file())

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if "/api/models/" in self.path:
                body = json.dumps([{"type": "file", "path": p.name, "size": p.stat().st_size} for p in files]).encode()
            else:
                body = (model_dir / self.path.rsplit("/", 1)[-1]).read_bytes()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def test_online_missing_model_is_downloaded(emu_factory, tiny_model) -> None:  # noqa: F811
    srv, url = _mini_hub(tiny_model)
    try:
        addr = f"127.{fresh_subnet()}.11"
        n = emu_factory("online", addr, [addr])
        dest = n.stage_model(tiny_model)
        import shutil

        shutil.rmtree(dest)
        n.start(env={"HF_ENDPOINT": url})
        wait_cluster([n])
        iid = place_and_create(n, 1)
        wait_ready(n, iid, 60)
        assert (dest / "model.safetensors.index.json").exists() and not list(dest.glob("*.partial"))
        dl = n.state()["downloads"][n.node_id()]
        assert any("DownloadCompleted" in d for d in dl)
    finally:
        srv.shutdown()

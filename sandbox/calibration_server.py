"""Calibration server: EXO-shaped chat completions on an exact, known timing schedule.

Run:  python -m sandbox.calibration_server [--port 0] [--model calib/model] [--answers F]
It prints `CALIBRATION_SERVER_PORT=<port>` once listening. `CalibServer.start()` does that in a
subprocess and gives a handle (`.url`, `.log()`, `.entry(response_id)`, `.reset_log()`, `.stop()`).

Schedule (per request; all deadlines absolute against `time.perf_counter()`, never summed
sleeps, so lateness does not accumulate): the request is stamped `t_recv` when its body is
read; token i (0-based) is due at `t_recv + ttft + i*gap`; a chunk of k tokens is written when
its last token is due. The server's perf_counter is the same CLOCK_MONOTONIC as the client's
(same host), so `GET /log` lets a test compare the client's stamps with what the server actually did.
Per request it holds t_recv, `t_sent` (the moment each token chunk, or the non-stream body, was handed
to the socket: stamped just before the write, so no reader can have it earlier), `t_progress` (the
prefill-progress comment's, likewise) and `conn` (the number of the TCP connection it came on).
`generation_stats` report the schedule (generation_tps = 1000 / gap_ms), not what a busy host made of it.

Per-request knobs go in the JSON body under "calib" (unknown keys are an error):
  ttft_ms (50), gap_ms (20), chunk (1 token per SSE chunk), reasoning (0 reasoning tokens; only
  when enable_thinking is not false and reasoning_effort != "none"), eos_at (None: stop early
  on /v1 only), prefill_progress (false), keepalive_s (10.0, like EXO), mode:
    normal | error_chunk (error after `error_after` tokens, then [DONE]) | no_done (ends the
    chunked body cleanly without [DONE]) | cut_body (closes the socket mid-body: for stream
    after `error_after` tokens, for non-stream mid-JSON) | cut_json (non-stream: a complete
    HTTP body that is not valid JSON) | keepalive_only (only `: keep-alive` every keepalive_s
    until the client leaves or 30 s) | http_500 (plain 500 with EXO's error body) | role_first
    (a role-only chunk before the first token, as OpenAI does)
`--defaults JSON` changes the defaults for every request (e.g. '{"reasoning": 8, "gap_ms": 5}').
Prompt tokens are counted as a subword tokenizer + chat template would, simply: every
whitespace-separated word is ceil(len/4) tokens (at least 1), plus 9 for the template.
Answers: `--answers F` is a JSON {substring: reply}; when the last user
message contains a substring, the reply's words are streamed as the tokens (for task tests).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {"ttft_ms": 50.0, "gap_ms": 20.0, "chunk": 1, "reasoning": 0, "eos_at": None,
                            "prefill_progress": False, "keepalive_s": 10.0, "mode": "normal",
                            "error_after": 3}
MODES = {"normal", "error_chunk", "no_done", "cut_body", "cut_json", "keepalive_only", "http_500",
         "role_first"}


class _State:
    model = "calib/model"
    connections = 0
    answers: dict[str, str] = {}
    log: list[dict[str, Any]] = []
    lock = threading.Lock()


def prompt_tokens_of(messages: list[dict[str, Any]]) -> int:
    """The server's 'tokenizer': ceil(len/4) tokens per whitespace-separated word, + 9 for the template."""
    words = [w for m in messages for w in str(m.get("content", "")).split()]
    return sum(max(1, -(-len(w) // 4)) for w in words) + 9


def _tokens_for(body: dict[str, Any], cfg: dict[str, Any], bench: bool) -> tuple[list[str], int]:
    """Token texts to emit and how many of the first are reasoning."""
    max_tokens = int(body.get("max_tokens") or 16)
    thinking = body.get("enable_thinking") is not False and body.get("reasoning_effort") != "none"
    n_reason = min(int(cfg["reasoning"]), max_tokens) if thinking else 0
    last_user = next((str(m.get("content", "")) for m in reversed(body.get("messages", []))
                      if m.get("role") == "user"), "")
    reply = next((a for k, a in _State.answers.items() if k in last_user), None)
    if reply is not None and not bench:
        words = reply.split(" ")
        content = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
        return [f"r{i % 10} " for i in range(n_reason)] + content[: max_tokens - n_reason], n_reason
    n = max_tokens
    if cfg["eos_at"] is not None and not bench:
        n = min(n, int(cfg["eos_at"]))
    toks = [f"r{i % 10} " if i < n_reason else f"w{i % 10} " for i in range(n)]
    return toks, min(n_reason, n)


def _chunks(tokens: list[str], n_reason: int, k: int) -> list[tuple[int, int]]:
    """(start, end) token ranges per SSE chunk; a chunk never mixes reasoning and content."""
    out, i = [], 0
    while i < len(tokens):
        end = min(i + k, len(tokens))
        if i < n_reason < end:
            end = n_reason
        out.append((i, end))
        i = end
    return out


class Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 with keep-alive; only what the benchmark client and tests need."""

    rbufsize = 65536
    wbufsize = 0

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with _State.lock:
            _State.connections += 1
            self.conn_no = _State.connections

    def handle(self) -> None:
        while True:
            req = self._read_request()
            if req is None:
                return
            method, path, body = req
            try:
                keep = self._route(method, path, body)
            except (BrokenPipeError, ConnectionResetError):
                return
            if not keep:
                return

    def _read_request(self) -> tuple[str, str, bytes] | None:
        line = self.rfile.readline(65537)
        if not line:
            return None
        parts = line.decode("latin-1").split()
        if len(parts) < 2:
            return None
        headers: dict[str, str] = {}
        while True:
            h = self.rfile.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        body = self.rfile.read(int(headers.get("content-length", "0") or 0))
        return parts[0], parts[1].split("?")[0], body

    def _send(self, status: str, ctype: str, payload: bytes, close: bool = False) -> None:
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
                f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n")
        self.wfile.write(head.encode() + payload)

    def _route(self, method: str, path: str, raw: bytes) -> bool:
        if method == "GET" and path == "/log":
            with _State.lock:
                self._send("200 OK", "application/json", json.dumps(_State.log).encode())
            return True
        if method == "POST" and path == "/log/reset":
            with _State.lock:
                _State.log.clear()
            self._send("200 OK", "application/json", b"{}")
            return True
        if method == "GET" and path == "/node_id":
            self._send("200 OK", "application/json", b'"calib-node"')
            return True
        if method == "POST" and path in ("/v1/chat/completions", "/bench/chat/completions"):
            return self._chat(json.loads(raw or b"{}"), bench=path.startswith("/bench"))
        self._send("404 Not Found", "application/json",
                   json.dumps({"detail": "Not Found"}).encode())
        return True

    def _exo_error(self, code: int, phrase: str, message: str) -> None:
        err = {"error": {"message": message, "type": phrase, "param": None, "code": code}}
        self._send(f"{code} {phrase}", "application/json", json.dumps(err).encode())

    def _chat(self, body: dict[str, Any], bench: bool) -> bool:
        t_recv = time.perf_counter()
        cfg = dict(DEFAULTS)
        extra = body.get("calib") or {}
        unknown = set(extra) - set(DEFAULTS)
        if unknown or extra.get("mode", "normal") not in MODES:
            self._send("422 Unprocessable Entity", "application/json",
                       json.dumps({"detail": f"bad calib keys {sorted(unknown)} or mode"}).encode())
            return True
        cfg.update(extra)
        if body.get("model") != _State.model:
            self._exo_error(404, "Not Found", f"No instance found for model {body.get('model')}")
            return True
        if cfg["mode"] == "http_500":
            self._exo_error(500, "Internal Server Error", "Runner shutdown before completing command")
            return True
        tokens, n_reason = _tokens_for(body, cfg, bench)
        entry: dict[str, Any] = {"id": f"cmd-{uuid.uuid4().hex[:12]}", "t_recv": t_recv, "t_sent": [],
                                 "n": len(tokens), "chunk": int(cfg["chunk"]), "bench": bench,
                                 "stream": bool(body.get("stream")), "ttft_ms": cfg["ttft_ms"], "conn": self.conn_no,
                                 "gap_ms": cfg["gap_ms"]}
        with _State.lock:
            _State.log.append(entry)
        if body.get("stream"):
            return self._stream(body, cfg, tokens, n_reason, entry, bench)
        return self._whole(body, cfg, tokens, n_reason, entry, bench)

    # ---- helpers shared by both modes -----------------------------------------------------
    def _usage(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        p = prompt_tokens_of(body.get("messages", []))
        return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}

    def _gen_stats(self, body: dict[str, Any], n: int, t_recv: float, t_first: float, t_last: float,
                   mem_key: str) -> dict[str, Any]:
        p = prompt_tokens_of(body.get("messages", []))
        gtps = (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else 0.0
        return {"prompt_tps": p / max(t_first - t_recv, 1e-9), "generation_tps": gtps, "prompt_tokens": p,
                "generation_tokens": n, "peak_memory_usage": {mem_key: 123456789},
                "prefix_cache_hit": "none"}

    @staticmethod
    def _wait_until(deadline: float) -> None:
        delay = deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    # ---- non-stream -----------------------------------------------------------------------
    def _whole(self, body: dict[str, Any], cfg: dict[str, Any], tokens: list[str], n_reason: int,
               entry: dict[str, Any], bench: bool) -> bool:
        t_recv = entry["t_recv"]
        ttft, gap = cfg["ttft_ms"] / 1000, cfg["gap_ms"] / 1000
        n = len(tokens)
        self._wait_until(t_recv + ttft + max(n - 1, 0) * gap)
        t_first, t_last = t_recv + ttft, t_recv + ttft + max(n - 1, 0) * gap
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(tokens[n_reason:])}
        if n_reason:
            msg["reasoning_content"] = "".join(tokens[:n_reason])
        finish = "length" if n >= int(body.get("max_tokens") or 16) else "stop"
        obj: dict[str, Any] = {"id": entry["id"], "object": "chat.completion", "created": int(time.time()),
                               "model": _State.model,
                               "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                               "usage": self._usage(body, n)}
        if bench:
            obj["generation_stats"] = self._gen_stats(body, n, t_recv, t_first, t_last, "inBytes")
            obj["power_usage"] = None
        payload = json.dumps(obj).encode()
        entry["t_sent"].append(time.perf_counter())
        if cfg["mode"] == "cut_json":
            self._send("200 OK", "application/json", payload[: len(payload) // 2], close=True)
            return False
        if cfg["mode"] == "cut_body":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            half = payload[: len(payload) // 2]
            self.wfile.write(head + f"{len(payload):x}\r\n".encode() + half)
            self._hard_close()
            return False
        self._send("200 OK", "application/json", payload)
        return True

    def _hard_close(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- stream ---------------------------------------------------------------------------
    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _event(self, obj: dict[str, Any], entry: dict[str, Any], base: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(base | obj).encode() + b"\n\n"

    def _stream(self, body: dict[str, Any], cfg: dict[str, Any], tokens: list[str], n_reason: int,
                entry: dict[str, Any], bench: bool) -> bool:
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        keepalive = b": keep-alive\n\n"
        self.wfile.write(head + f"{len(keepalive):x}\r\n".encode() + keepalive + b"\r\n")  # one write: never apart
        mode, t_recv = cfg["mode"], entry["t_recv"]
        if mode == "keepalive_only":
            return self._keepalive_only(cfg, t_recv)
        ttft, gap, k = cfg["ttft_ms"] / 1000, cfg["gap_ms"] / 1000, max(1, int(cfg["chunk"]))
        base = {"id": entry["id"], "object": "chat.completion", "created": int(time.time()), "model": _State.model}
        if cfg["prefill_progress"]:
            p = prompt_tokens_of(body.get("messages", []))
            self._wait_until(t_recv + ttft / 2)
            prog = {"PrefillProgressChunk": {"model": _State.model, "processed_tokens": p // 2, "total_tokens": p}}
            entry["t_progress"] = time.perf_counter()
            self._chunk(b": prefill_progress " + json.dumps(prog).encode() + b"\n\n")
        if mode == "role_first":
            self._chunk(self._event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                                    entry, base))
        return self._emit_tokens(body, cfg, tokens, n_reason, entry, base, ttft, gap, k)

    def _emit_tokens(self, body: dict[str, Any], cfg: dict[str, Any], tokens: list[str], n_reason: int,
                     entry: dict[str, Any], base: dict[str, Any], ttft: float, gap: float, k: int) -> bool:
        mode, t_recv, n = cfg["mode"], entry["t_recv"], len(tokens)
        ranges = _chunks(tokens, n_reason, k)
        max_tokens = int(body.get("max_tokens") or 16)
        for j, (a, b) in enumerate(ranges):
            if mode in ("error_chunk", "cut_body") and a >= int(cfg["error_after"]):
                return self._fail_stream(mode, base, entry)
            self._wait_until(t_recv + ttft + (b - 1) * gap)
            text = "".join(tokens[a:b])
            delta = {"role": "assistant", ("reasoning_content" if a < n_reason else "content"): text}
            choice: dict[str, Any] = {"index": 0, "delta": delta}
            extra: dict[str, Any] = {}
            if j == len(ranges) - 1:
                choice["finish_reason"] = "length" if n >= max_tokens else "stop"
                extra["usage"] = self._usage(body, n)
            entry["t_sent"].append(time.perf_counter())
            self._chunk(self._event({"choices": [choice]} | extra, entry, base))
        stats = self._gen_stats(body, n, t_recv, t_recv + ttft, t_recv + ttft + max(n - 1, 0) * gap, "in_bytes")
        self._chunk(b": generation_stats " + json.dumps(stats).encode() + b"\n\n")
        if mode != "no_done":
            self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        return True

    def _fail_stream(self, mode: str, base: dict[str, Any], entry: dict[str, Any]) -> bool:
        if mode == "cut_body":
            self.wfile.write(b"40\r\ndata: {\"id\": \"cut")
            self._hard_close()
            return False
        err = {"error": {"message": "Runner shutdown before completing command", "type": "InternalServerError",
                         "code": 500}}
        self._chunk(b"data: " + json.dumps(err).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        return True

    def _keepalive_only(self, cfg: dict[str, Any], t_recv: float) -> bool:
        every = float(cfg["keepalive_s"])
        i = 1
        while time.perf_counter() - t_recv < 30:
            self._wait_until(t_recv + i * every)
            try:
                self._chunk(b": keep-alive\n\n")
            except OSError:
                return False
            i += 1
        return False


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def serve(host: str, port: int, model: str, answers: dict[str, str]) -> None:
    """Serve forever; prints CALIBRATION_SERVER_PORT=<port> once listening."""
    _State.model, _State.answers = model, answers
    with Server((host, port), Handler) as srv:
        print(f"CALIBRATION_SERVER_PORT={srv.server_address[1]}", flush=True)
        srv.serve_forever(poll_interval=0.5)


class CalibServer:
    """Handle on a calibration server subprocess."""

    def __init__(self, proc: subprocess.Popen[str], port: int, model: str):
        self.proc, self.port, self.model = proc, port, model
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    def start(cls, model: str = "calib/model", answers: dict[str, str] | None = None,
              answers_path: Path | None = None, timeout_s: float = 15.0,
              defaults: dict[str, Any] | None = None) -> CalibServer:
        """Start the server in a subprocess and wait (polling its stdout) until it listens."""
        argv = [sys.executable, str(Path(__file__).resolve()), "--port", "0", "--model", model,
                "--defaults", json.dumps(defaults or {})]
        if answers:
            if answers_path is None:
                raise ValueError("answers need answers_path (a file the subprocess can read)")
            answers_path.write_text(json.dumps(answers))
            argv += ["--answers", str(answers_path)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout_s
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("CALIBRATION_SERVER_PORT="):
                return cls(proc, int(line.split("=", 1)[1]), model)
            if not line and proc.poll() is not None:
                break
        proc.kill()
        raise RuntimeError("calibration server did not start")

    def log(self) -> list[dict[str, Any]]:
        import requests
        return requests.get(self.url + "/log", timeout=10).json()

    def entry(self, response_id: str | None) -> dict[str, Any]:
        """The log entry of the request answered with id `response_id`."""
        found = [e for e in self.log() if e["id"] == response_id]
        if not found:
            raise KeyError(f"no request answered as {response_id!r} in the calibration server's log")
        return found[0]

    def reset_log(self) -> None:
        import requests
        requests.post(self.url + "/log/reset", timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", default="calib/model")
    ap.add_argument("--answers", type=Path)
    ap.add_argument("--defaults", default="{}", help="JSON overriding DEFAULTS for every request")
    a = ap.parse_args(argv)
    DEFAULTS.update(json.loads(a.defaults))
    answers = json.loads(a.answers.read_text()) if a.answers else {}
    try:
        serve(a.host, a.port, a.model, answers)
    except KeyboardInterrupt:
        pass
    finally:
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()

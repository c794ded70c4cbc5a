"""Streaming chat client for EXO's OpenAI-style API, built for measurement.

Contract
--------
`BenchClient(base_url, model).send(ChatRequest(...)) -> RequestRecord` never raises for a
server or transport problem: the record carries `error` / `error_kind` instead, so a load
generator can count failures. It raises only for programming errors (bad arguments).
Every request ends within `request_timeout_s` in all (connect, headers and body, streamed or not:
`modeldrop.httpdeadline`), a server trickling bytes included: `error_kind="timeout"`.

Clock rules: every duration comes from `time.perf_counter()` (monotonic, sub-µs); the wall
clock (`time.time()`) is kept only as `wall_start`, a timestamp for the ledger. `t_send` is the
instant the request's last byte was handed to the socket (stamped inside the HTTP connection's
`send`); the time `requests` spends building the request before that is client overhead, kept
apart as `send_overhead_s` (calibration showed it is ~1 ms per request and grows to tens of ms
when 32 threads fire at once on 2 cores, which would otherwise be charged to the server's TTFT).
All other times in a record are seconds *relative to* `t_send`, so records are JSON-ready.

Arrival times: the body is read with `urllib3`'s `read1()` — it returns as soon as *any* bytes
are on the socket (chunked or not), so a chunk is stamped when it reaches Python, not when a
line buffer fills. All SSE events that arrive in one read share that read's stamp (they did
arrive together).

EXO's server-sent events and how each piece is handled:
- a stall is no progress for `stall_timeout_s`, whatever else arrives: progress is a new token
  chunk, or a prefill_progress whose processed count grew. Keep-alives and other comment lines,
  role-only chunks, repeated prefill progress, bytes without a newline and a silent socket (the
  stream's read timeout is the stall window) all leave the clock running; past the window the
  request is aborted as `stalled` (the hang signature), saying what did arrive meanwhile;
- comment lines: `: keep-alive` (counted), `: prefill_progress {...}` (kept with its
  arrival time), `: generation_stats {...}` (parsed; server truth for token counts and tps);
- `data: {...}` chunks with `object:"chat.completion"` (not `.chunk`) and `role` repeated in
  every delta: a chunk is a *token chunk* when its delta has non-empty `content`,
  `reasoning_content` (or `reasoning`), or `tool_calls`; role-only chunks are not tokens;
- `usage` is read from whichever chunk carries it (EXO: the last content chunk);
- `data: {"error": {...}}` -> `error_kind="stream_error"` (the message is kept);
- end of body without `data: [DONE]` -> `error_kind="no_done"` (tokens so far are kept);
- non-stream: HTTP 200 whose body is cut or is not JSON -> `error_kind="truncated"`;
- non-200 -> `error_kind="http"` with EXO's `{"error":{"message":...}}` or FastAPI `detail`.

Metric definitions (also in modeldrop/bench/README.md) are properties of `RequestRecord`:
- TTFT  = first token chunk (reasoning included) - send
- TTFC  = first *content* chunk - send (time to the answer; equals TTFT without reasoning)
- E2E   = last token chunk - send (stream); response fully read - send (non-stream)
- n     = server completion tokens: `usage.completion_tokens`, else
          `generation_stats.generation_tokens`, else None (we never guess from chunk counts)
- TPOT  = (E2E - TTFT) / (n - 1)
- ITL   = gaps between consecutive token chunks (per chunk; a chunk may carry several tokens)
- decode tok/s = (n - n_first) / (t_last - t_first), where n_first is the number of tokens in
          the first token chunk: 1 when the server sends one token per chunk (EXO), else
          estimated as n x chars(first chunk) / chars(all chunks). With one token per chunk this
          is exactly (n - 1) / (t_last - t_first).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests
from urllib3.exceptions import ReadTimeoutError

from modeldrop import httpdeadline
from modeldrop.bench.records import BENCH_PATH, CHAT_PATH, ERROR_KINDS, ChatRequest, RequestRecord

__all__ = ["BENCH_PATH", "CHAT_PATH", "ERROR_KINDS", "BenchClient", "ChatRequest", "RequestRecord", "quick_chat"]

_wire = threading.local()


class _StampingHTTPConnection(httpdeadline.DeadlineHTTPConnection):
    """Records in a thread-local the perf_counter right after each socket send."""

    def send(self, data: Any) -> None:
        super().send(data)
        _wire.t = time.perf_counter()


class _StampingHTTPSConnection(httpdeadline.DeadlineHTTPSConnection):
    def send(self, data: Any) -> None:
        super().send(data)
        _wire.t = time.perf_counter()


def _stamping_session() -> requests.Session:
    """A deadline Session whose connections stamp the moment the request leaves for the socket."""
    return httpdeadline.new_session(_StampingHTTPConnection, _StampingHTTPSConnection, pool_maxsize=1)


class _Abort(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _error_message(body: bytes) -> str:
    """EXO `{"error":{"message"}}`, FastAPI `{"detail"}`, or the first 300 chars of the body."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
        if "detail" in obj:
            return json.dumps(obj["detail"])[:300]
    return json.dumps(obj)[:300]


class _SSEState:
    """Incremental SSE parser that fills a RequestRecord; call `feed(bytes, t)` per read."""

    def __init__(self, rec: RequestRecord, stall_timeout_s: float):
        self.rec = rec
        self.buf = b""
        self.stall_timeout_s = stall_timeout_s
        self.last_progress_t = 0.0
        self.prefill_done = -1
        self.since_progress: dict[str, int] = {}  # what arrived since the last progress, for the message
        self.text_parts: list[str] = []
        self.reasoning_parts: list[str] = []

    def feed(self, data: bytes, t: float) -> None:
        """Parse one read's bytes (stamped t); raise _Abort on an error event or a stall."""
        self.buf += data
        if b"\n" in data:
            *lines, self.buf = self.buf.split(b"\n")
            for raw in lines:
                line = raw.rstrip(b"\r")
                if line:
                    self._line(line, t)
        else:
            self._saw("bytes without a newline")
        self.check_stall(t)

    def _saw(self, what: str) -> None:
        self.since_progress[what] = self.since_progress.get(what, 0) + 1

    def _progress(self, t: float) -> None:
        self.last_progress_t = t
        self.since_progress.clear()

    def check_stall(self, t: float) -> None:
        """Abort as `stalled` when no progress came for longer than the stall window (not after [DONE])."""
        if self.rec.saw_done or t - self.last_progress_t <= self.stall_timeout_s:
            return
        seen = ", ".join(f"{n} {what}" for what, n in self.since_progress.items()) or "nothing at all"
        raise _Abort("stalled", f"no new token for {t - self.last_progress_t:.1f}s (stall window "
                                f"{self.stall_timeout_s:g}s); meanwhile: {seen}")

    def _line(self, line: bytes, t: float) -> None:
        if line.startswith(b":"):
            self._comment(line[1:].strip(), t)
        elif line.startswith(b"data:"):
            self._data(line[5:].strip(), t)
        else:  # other SSE fields (event:, id:, retry:) carry nothing for us
            self._saw("other SSE lines")

    def _comment(self, body: bytes, t: float) -> None:
        rec = self.rec
        if body.startswith(b"keep-alive"):
            rec.keepalives += 1
            self._saw("keep-alive")
        elif body.startswith(b"generation_stats"):
            rec.generation_stats = _json_or_none(body[len(b"generation_stats"):])
        elif body.startswith(b"prefill_progress"):
            obj = _json_or_none(body[len(b"prefill_progress"):]) or {}
            inner = obj.get("PrefillProgressChunk", obj) if isinstance(obj, dict) else {}
            done = inner.get("processed_tokens", 0) if isinstance(inner, dict) else 0
            rec.prefill_progress.append([t, done, inner.get("total_tokens", 0) if isinstance(inner, dict) else 0])
            if isinstance(done, (int, float)) and done > self.prefill_done:
                self.prefill_done = done
                self._progress(t)  # prefill is moving: not a hang
            else:
                self._saw("repeated prefill progress")
        else:
            self._saw("comment lines")

    def _data(self, payload: bytes, t: float) -> None:
        rec = self.rec
        if payload == b"[DONE]":
            rec.saw_done = True
            return
        rec.data_events += 1
        obj = _json_or_none(payload)
        if not isinstance(obj, dict):
            raise _Abort("parse", f"unparseable data line: {payload[:120]!r}")
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            raise _Abort("stream_error", msg)
        if rec.response_id is None and isinstance(obj.get("id"), str):
            rec.response_id = obj["id"]
        if isinstance(obj.get("usage"), dict):
            rec.usage = obj["usage"]
        if isinstance(obj.get("generation_stats"), dict):
            rec.generation_stats = obj["generation_stats"]
        for choice in obj.get("choices") or []:
            if isinstance(choice, dict):
                self._choice(choice, t)

    def _choice(self, choice: dict[str, Any], t: float) -> None:
        rec = self.rec
        if choice.get("finish_reason"):
            rec.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        content = delta.get("content") or ""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        tools = delta.get("tool_calls")
        if not (content or reasoning or tools):
            self._saw("chunks without a token")
            return
        self._progress(t)
        if rec.t_first_token is None:
            rec.t_first_token = t
        if content and rec.t_first_content is None:
            rec.t_first_content = t
        rec.t_last_token = t
        rec.chunk_times.append(t)
        rec.chunk_chars.append(len(content) + len(reasoning) + (len(json.dumps(tools)) if tools else 0))
        rec.chunk_reasoning.append(bool(reasoning) and not content)
        if content:
            self.text_parts.append(content)
        if reasoning:
            self.reasoning_parts.append(reasoning)

    def finish(self) -> None:
        """Join the text; then parse a last line that had no newline (it may raise _Abort)."""
        self.rec.text = "".join(self.text_parts)
        self.rec.reasoning_text = "".join(self.reasoning_parts)
        rest, self.buf = self.buf.rstrip(b"\r"), b""
        if rest.strip():
            self._line(rest, self.rec.t_end or 0.0)
            self.rec.text = "".join(self.text_parts)
            self.rec.reasoning_text = "".join(self.reasoning_parts)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


class BenchClient:
    """A measuring client for one EXO API base URL and one model id; thread-safe.

    Each thread gets its own `requests.Session` (keep-alive connection reuse), so N load
    threads hold N connections, like N users.
    """

    def __init__(self, base_url: str, model: str, *, connect_timeout_s: float = 5.0,
                 request_timeout_s: float = 600.0, stall_timeout_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.request_timeout_s = request_timeout_s  # one request in all: connect, headers, body
        self.timeout = (min(connect_timeout_s, request_timeout_s), request_timeout_s)
        # a stream's socket may not stay silent longer than the stall window (each read is bounded by it)
        self.stream_timeout = (self.timeout[0], min(request_timeout_s, stall_timeout_s))
        self.stall_timeout_s = stall_timeout_s
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = _stamping_session()
            self._local.session = s
        return s

    def close(self) -> None:
        """Close this thread's session (other threads' sessions close when they are collected)."""
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()
            self._local.session = None

    def send(self, req: ChatRequest) -> RequestRecord:
        """Send one request and measure it; errors are returned in the record, never raised."""
        body = json.dumps(req.body(self.model)).encode()
        cpu0 = time.thread_time()
        rec = RequestRecord(tag=req.tag, endpoint=req.endpoint, stream=req.stream,
                            wall_start=time.time(), t_send=time.perf_counter(), prompt_target=req.prompt_target,
                            prompt_predicted=req.prompt_predicted)
        try:
            self._exchange(req, body, rec)
        except _Abort as e:
            rec.error_kind, rec.error = e.kind, str(e)
        except requests.Timeout as e:
            rec.error_kind, rec.error = "timeout", f"{type(e).__name__}: {e}"
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as e:
            rec.error_kind, rec.error = "truncated", f"body cut: {type(e).__name__}: {e}"
        except requests.RequestException as e:
            rec.error_kind, rec.error = "connection", f"{type(e).__name__}: {e}"
        except Exception as e:  # urllib3 protocol errors surface raw from read1()
            kind = "truncated" if rec.status == 200 else "connection"
            rec.error_kind, rec.error = kind, f"{type(e).__name__}: {e}"
        if rec.t_end is None:
            rec.t_end = time.perf_counter() - rec.t_send
        rec.client_cpu_s = time.thread_time() - cpu0
        return rec

    def _exchange(self, req: ChatRequest, body: bytes, rec: RequestRecord) -> None:
        """POST and read the answer, all of it within request_timeout_s (TotalTimeout otherwise)."""
        url = self.base_url + req.endpoint
        with httpdeadline.deadline(self.request_timeout_s, f"POST {url}"):
            self._post_and_read(url, req, body, rec)

    def _post_and_read(self, url: str, req: ChatRequest, body: bytes, rec: RequestRecord) -> None:
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if req.stream else "application/json"}
        t_call = rec.t_send
        _wire.t = None
        try:
            resp = self._session().post(url, data=body, headers=headers,
                                        stream=True, timeout=self.stream_timeout if req.stream else self.timeout)
        finally:
            self._rebase(rec, t_call)
        complete = False
        try:
            rec.t_headers = time.perf_counter() - rec.t_send
            rec.status = resp.status_code
            if resp.status_code != 200:
                raw = resp.content
                rec.t_end = time.perf_counter() - rec.t_send
                complete = True
                raise _Abort("http", f"HTTP {resp.status_code}: {_error_message(raw)}")
            # EXO v1.0.71's /bench/chat/completions answers a JSON body even when asked to stream
            as_json = resp.headers.get("content-type", "").startswith("application/json")
            if req.stream and not as_json:
                complete = self._read_stream(resp, rec)
            else:
                self._read_whole(resp, rec)
                complete = True
        finally:
            # a body read to its end leaves the connection reusable (keep-alive); otherwise drop it
            if complete:
                resp.raw.release_conn()
            else:
                resp.close()

    @staticmethod
    def _rebase(rec: RequestRecord, t_call: float) -> None:
        """Move t_send to the wire stamp when the connection recorded one (see module doc)."""
        t_wire = getattr(_wire, "t", None)
        if t_wire is not None and t_wire >= t_call:
            rec.t_send = t_wire
            rec.send_overhead_s = t_wire - t_call

    def _read_stream(self, resp: requests.Response, rec: RequestRecord) -> bool:
        """Read the SSE body to its end (returns True) or raise _Abort on an error event/stall."""
        state = _SSEState(rec, self.stall_timeout_s)
        raw = resp.raw
        t0 = rec.t_send
        clock = time.perf_counter
        try:
            while True:
                try:
                    data = raw.read1(65536)
                except (ReadTimeoutError, TimeoutError):
                    state.check_stall(clock() - t0)
                    raise _Abort("stalled", f"the socket stayed silent for {self.stream_timeout[1]:g}s") from None
                t = clock() - t0
                if not data:
                    break
                if rec.t_first_byte is None:
                    rec.t_first_byte = t
                state.feed(data, t)
        finally:
            rec.t_end = clock() - t0
            try:
                state.finish()
            except _Abort:
                pass
        if not rec.saw_done:
            raise _Abort("no_done", f"stream ended without [DONE] after {len(rec.chunk_times)} token chunks")
        return True

    def _read_whole(self, resp: requests.Response, rec: RequestRecord) -> None:
        raw_body = resp.content
        rec.t_end = time.perf_counter() - rec.t_send
        rec.t_first_byte = rec.t_headers
        try:
            obj = json.loads(raw_body)
        except ValueError as e:
            raise _Abort("truncated", f"HTTP 200 but body is not JSON ({len(raw_body)} bytes): {e}") from None
        if not isinstance(obj, dict) or "error" in obj:
            raise _Abort("stream_error", _error_message(raw_body))
        rec.response_id = obj.get("id") if isinstance(obj.get("id"), str) else None
        rec.usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else None
        if isinstance(obj.get("generation_stats"), dict):
            rec.generation_stats = obj["generation_stats"]
        choices = obj.get("choices") or [{}]
        msg = choices[0].get("message") or {}
        rec.finish_reason = choices[0].get("finish_reason")
        rec.text = msg.get("content") or ""
        rec.reasoning_text = msg.get("reasoning_content") or msg.get("reasoning") or ""
        rec.saw_done = True


def quick_chat(base_url: str, model: str, *, timeout_s: float = 60.0) -> RequestRecord:
    """A short non-stream chat ("Say OK", 8 tokens) to check the instance still answers, within timeout_s in all."""
    client = BenchClient(base_url, model, request_timeout_s=timeout_s)
    rec = client.send(ChatRequest(messages=[{"role": "user", "content": "Say OK."}],
                                  max_tokens=8, stream=False, tag="liveness"))
    client.close()
    if rec.ok and not (rec.text or rec.reasoning_text):
        rec.error_kind, rec.error = "parse", "HTTP 200 but no text in choices[0].message"
    return rec

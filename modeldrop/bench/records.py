"""What one benchmark request is and what was measured of it: `ChatRequest` (what to send) and
`RequestRecord` (timestamps, token counts, errors, and the metrics derived from them: TTFT, TTFC, E2E,
TPOT, ITL, decode tok/s; definitions in modeldrop/bench/README.md). Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CHAT_PATH = "/v1/chat/completions"
BENCH_PATH = "/bench/chat/completions"

ERROR_KINDS = ("http", "stream_error", "no_done", "truncated", "stalled", "timeout", "connection",
               "parse")


@dataclass
class ChatRequest:
    """One chat completion to send. `extra_body` is merged into the JSON body last."""

    messages: list[dict[str, Any]]
    max_tokens: int
    stream: bool = True
    endpoint: str = CHAT_PATH
    temperature: float | None = 0.0
    enable_thinking: bool | None = None
    reasoning_effort: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    tag: str = ""
    prompt_target: int | None = None  # the prompt length asked for (sized prompts), copied to the record
    prompt_predicted: int | None = None  # what the sizer counted for it

    def body(self, model: str) -> dict[str, Any]:
        """The JSON body EXO expects (`max_tokens`, never `max_completion_tokens`)."""
        out: dict[str, Any] = {"model": model, "messages": self.messages,
                               "max_tokens": self.max_tokens, "stream": self.stream}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.enable_thinking is not None:
            out["enable_thinking"] = self.enable_thinking
        if self.reasoning_effort is not None:
            out["reasoning_effort"] = self.reasoning_effort
        out.update(self.extra_body)
        return out


@dataclass
class RequestRecord:
    """Everything measured about one request. Times are seconds after `t_send`."""

    tag: str
    endpoint: str
    stream: bool
    wall_start: float  # time.time() at send, for the ledger only
    t_send: float  # perf_counter() when the request left for the socket (absolute, see module doc)
    send_overhead_s: float = 0.0  # client time from send() call to t_send (not in any metric)
    status: int | None = None
    t_headers: float | None = None
    t_first_byte: float | None = None
    t_first_token: float | None = None
    t_first_content: float | None = None
    t_last_token: float | None = None
    t_end: float | None = None
    chunk_times: list[float] = field(default_factory=list)  # token chunks only
    chunk_chars: list[int] = field(default_factory=list)
    chunk_reasoning: list[bool] = field(default_factory=list)
    data_events: int = 0  # every `data:` line, [DONE] excluded
    keepalives: int = 0
    prefill_progress: list[list[float]] = field(default_factory=list)  # [t, processed, total]
    usage: dict[str, Any] | None = None
    generation_stats: dict[str, Any] | None = None
    finish_reason: str | None = None
    response_id: str | None = None  # EXO's command id (the `id` of the chunks)
    saw_done: bool = False
    text: str = ""
    reasoning_text: str = ""
    error: str | None = None
    error_kind: str | None = None
    client_cpu_s: float = 0.0  # CPU time of the sending thread spent on this request
    prompt_target: int | None = None  # the prompt length asked for (None: a fixed prompt)
    prompt_predicted: int | None = None  # the sizer's count of the prompt sent

    # ---- derived metrics -------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.error is None

    def _server_count(self, usage_key: str, stats_key: str) -> int | None:
        """A server-reported count: `usage[usage_key]` first, then `generation_stats[stats_key]`."""
        for source, key in ((self.usage, usage_key), (self.generation_stats, stats_key)):
            if source and isinstance(source.get(key), int):
                return source[key]
        return None

    @property
    def completion_tokens(self) -> int | None:
        """Server-reported output tokens (usage first, then generation_stats)."""
        return self._server_count("completion_tokens", "generation_tokens")

    @property
    def prompt_tokens(self) -> int | None:
        """Server-reported prompt tokens (usage first, then generation_stats)."""
        return self._server_count("prompt_tokens", "prompt_tokens")

    @property
    def ttft(self) -> float | None:
        return self.t_first_token

    @property
    def ttfc(self) -> float | None:
        return self.t_first_content

    @property
    def e2e(self) -> float | None:
        if self.stream:
            return self.t_last_token if self.t_last_token is not None else self.t_end
        return self.t_end

    @property
    def tpot(self) -> float | None:
        n, e2e, ttft = self.completion_tokens, self.e2e, self.ttft
        if n is None or n < 2 or e2e is None or ttft is None:
            return None
        return (e2e - ttft) / (n - 1)

    @property
    def itls(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    @property
    def first_chunk_tokens(self) -> float:
        """Tokens in the first token chunk: 1 with one token per chunk, else a char-share estimate."""
        n = self.completion_tokens
        if n is None or not self.chunk_chars or len(self.chunk_chars) >= n:
            return 1.0
        total = sum(self.chunk_chars)
        return max(1.0, n * self.chunk_chars[0] / total) if total else 1.0

    @property
    def decode_tps(self) -> float | None:
        n = self.completion_tokens
        if n is None or len(self.chunk_times) < 2:
            return None
        window = self.chunk_times[-1] - self.chunk_times[0]
        tokens = n - self.first_chunk_tokens
        return tokens / window if window > 0 and tokens > 0 else None

    def _stat(self, key: str) -> float | None:
        v = (self.generation_stats or {}).get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    @property
    def server_generation_tps(self) -> float | None:
        """EXO's `generation_stats.generation_tps` (decode tok/s measured on the server)."""
        return self._stat("generation_tps")

    @property
    def server_prompt_tps(self) -> float | None:
        """EXO's `generation_stats.prompt_tps` (prefill tok/s measured on the server)."""
        return self._stat("prompt_tps")

    @property
    def peak_memory_bytes(self) -> int | None:
        """EXO's `generation_stats.peak_memory_usage` (a Memory: `in_bytes` in SSE comments, `inBytes` in JSON)."""
        mem = (self.generation_stats or {}).get("peak_memory_usage")
        v = (mem.get("in_bytes", mem.get("inBytes")) if isinstance(mem, dict) else None)
        return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else None

    @property
    def prompt_off_target(self) -> bool:
        """A sized prompt whose server count is known and is not the length asked for."""
        return self.prompt_target is not None and self.prompt_tokens is not None \
            and self.prompt_tokens != self.prompt_target

    @property
    def reasoning_chunks(self) -> int:
        return sum(self.chunk_reasoning)

    @property
    def reasoning_tokens_est(self) -> int | None:
        """Reasoning tokens: the server's count when non-zero (EXO always sends 0), else
        n x (reasoning chunks / token chunks), exact with one token per chunk."""
        details = (self.usage or {}).get("completion_tokens_details") or {}
        if details.get("reasoning_tokens"):
            return int(details["reasoning_tokens"])
        n = self.completion_tokens
        if n is None or not self.chunk_reasoning:
            return None if n is None else 0
        return round(n * self.reasoning_chunks / len(self.chunk_reasoning))

    def to_dict(self, keep_text: int = 400) -> dict[str, Any]:
        """JSON-ready raw record plus the derived metrics; text capped to `keep_text` chars."""
        d = asdict(self)
        d["text"] = self.text[:keep_text]
        d["reasoning_text"] = self.reasoning_text[:keep_text]
        for name in ("completion_tokens", "prompt_tokens", "ttft", "ttfc", "e2e", "tpot",
                     "decode_tps", "server_generation_tps", "server_prompt_tps", "peak_memory_bytes",
                     "reasoning_tokens_est"):
            d[name] = getattr(self, name)
        d["ok"] = self.ok
        return d

"""Calibration of the measuring client against a server with a known timing schedule.

Contract
--------
`measure(url, model, concurrency, ...)` drives the calibration server
(a server with a known timing schedule, e.g. the sandbox's calibration server, already running at `url`) with
`concurrency` barrier-released threads (`calibration_requests`) and returns the client's errors against the
truth (`calibration_errors(records, server log)`):
- `ttft_err_ms`: client TTFT - the scheduled TTFT (configured ttft + (chunk-1) x gap, since a
  chunk leaves when its last token is due; the schedule runs from the moment the server read the
  request), so it includes the request's trip to the server;
- `ttft_lag_ms`: client TTFT - true TTFT, where true TTFT = the server's actual write time of
  the first chunk - the client's send stamp (both on the host's CLOCK_MONOTONIC): the client's
  own measurement error, free of the server's scheduling lateness;
- `decode_err_pct`: client decode tok/s / configured rate (1000/gap_ms) - 1, in percent;
- `decode_err_vs_sent_pct`: client decode tok/s / the rate the server actually achieved
  (`sent_rate`) - 1, in percent: the client's own error;
- `chunk_lag_ms`: every token chunk's client stamp - the server's write of it (`wire_lags`): never
  below 0 (the server stamps just before it writes), about the loopback trip when stamped on arrival;
- `cpu_us_per_token`: the client's thread CPU time per output token.
Each as a `stats.dist` with n. The server's log entry per request (`server_log()`, matched by
response id) holds `t_sent` (its write time of every token chunk) and `n`. `python -m sandbox.calibrate`
(or `python benchmarks/calibrate.py`) starts the sandbox's calibration server and prints the table for
c = 1, 8, 32. The figures are that script's to show, not a test's to assert: against the schedule they
carry the server's own lateness, and a single request's against the server's writes the delay a busy
host can put on one read (tens of ms at times).
"""

from __future__ import annotations

from typing import Any

from modeldrop.bench.client import BenchClient, ChatRequest, RequestRecord
from modeldrop.bench.load import run_rounds
from modeldrop.bench.stats import dist


def wire_lags(rec: RequestRecord, entry: dict[str, Any]) -> list[float]:
    """Seconds from the server's write of each token chunk to the client's stamp of it (same clock)."""
    return [rec.t_send + t - sent for t, sent in zip(rec.chunk_times, entry["t_sent"], strict=False)]


def sent_rate(entry: dict[str, Any], first_chunk_tokens: float) -> float | None:
    """The decode tok/s the server achieved: tokens after the first chunk over its first-to-last write."""
    window = entry["t_sent"][-1] - entry["t_sent"][0] if entry["t_sent"] else 0.0
    tokens = entry["n"] - first_chunk_tokens
    return tokens / window if window > 0 and tokens > 0 else None


def calibration_requests(url: str, model: str, concurrency: int, *, ttft_ms: float = 100.0, gap_ms: float = 20.0,
                         tokens: int = 64, chunk: int = 1, rounds: int = 3) -> list[RequestRecord]:
    """The measured requests (warm-ups apart) of `rounds` barrier-released rounds at `concurrency`."""
    client = BenchClient(url, model)
    calib = {"ttft_ms": ttft_ms, "gap_ms": gap_ms, "chunk": chunk}

    def make(r: int, i: int) -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": f"calibrate r{r} t{i}"}],
                           max_tokens=tokens if r >= 0 else 2, extra_body={"calib": calib if r >= 0 else
                                                                           {"ttft_ms": 1, "gap_ms": 1}})

    return run_rounds(client, make, concurrency, rounds, warmup=1)


def measure(url: str, model: str, concurrency: int, *, ttft_ms: float = 100.0, gap_ms: float = 20.0,
            tokens: int = 64, chunk: int = 1, rounds: int = 3, server_log: Any = None) -> dict[str, Any]:
    """Errors of the client at one concurrency level; `server_log()` returns the server's log."""
    recs = calibration_requests(url, model, concurrency, ttft_ms=ttft_ms, gap_ms=gap_ms, tokens=tokens,
                                chunk=chunk, rounds=rounds)
    return calibration_errors(recs, server_log() if server_log else [], concurrency=concurrency, ttft_ms=ttft_ms,
                              gap_ms=gap_ms, tokens=tokens, chunk=chunk, rounds=rounds)


def calibration_errors(recs: list[RequestRecord], log: list[dict[str, Any]], *, concurrency: int, ttft_ms: float,
                       gap_ms: float, tokens: int, chunk: int, rounds: int) -> dict[str, Any]:
    """The contract's figures for `recs`, against the schedule and the server's `log` entries."""
    sent = {e["id"]: e for e in log}
    rate = 1000.0 / gap_ms
    first_due_ms = ttft_ms + (min(chunk, tokens) - 1) * gap_ms
    ok = [r for r in recs if r.ok]
    lags, chunk_lags, dec_sent = [], [], []
    for r in ok:
        e = sent.get(r.response_id or "")
        if not e or not e["t_sent"] or r.ttft is None:
            continue
        lags.append((r.t_send + r.ttft - e["t_sent"][0]) * 1000)
        chunk_lags += [lag * 1000 for lag in wire_lags(r, e)]
        server_tps = sent_rate(e, min(chunk, e["n"]))
        if r.decode_tps and server_tps:
            dec_sent.append((r.decode_tps / server_tps - 1) * 100)
    out_tokens = sum(r.completion_tokens or 0 for r in ok)
    return {
        "concurrency": concurrency, "requests": len(recs), "errors": len(recs) - len(ok),
        "config": {"ttft_ms": ttft_ms, "gap_ms": gap_ms, "tokens": tokens, "chunk": chunk, "rounds": rounds},
        "ttft_err_ms": dist((r.ttft * 1000 - first_due_ms) for r in ok if r.ttft is not None),
        "ttft_lag_ms": dist(lags),
        "decode_err_pct": dist((r.decode_tps / rate - 1) * 100 for r in ok if r.decode_tps),
        "decode_err_vs_sent_pct": dist(dec_sent),
        "chunk_lag_ms": dist(chunk_lags),
        "cpu_us_per_token": sum(r.client_cpu_s for r in ok) / out_tokens * 1e6 if out_tokens else None,
    }


def format_row(m: dict[str, Any]) -> str:
    """One calibration level as a table line."""
    t, lag, d, ds = m["ttft_err_ms"], m["ttft_lag_ms"], m["decode_err_pct"], m["decode_err_vs_sent_pct"]
    return (f"c={m['concurrency']:>3} n={t['n']:>3} | TTFT vs schedule p50 {t['p50']:+5.2f} p95 {t['p95']:+5.2f} ms"
            f" | vs server writes p50 {lag['p50'] or 0:+5.2f} p95 {lag['p95'] or 0:+5.2f} ms"
            f" | decode vs schedule p50 {d['p50']:+6.3f} % max|.| {max(abs(d['min']), abs(d['max'])):5.3f} %"
            f" | vs writes p50 {ds['p50'] or 0:+6.3f} %"
            f" | CPU {m['cpu_us_per_token']:5.1f} us/token | errors {m['errors']}")

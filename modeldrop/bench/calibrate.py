"""Calibration of the measuring client against a server with a known timing schedule.

Contract
--------
`measure(url, model, concurrency, ...)` drives the calibration server
(a server with a known timing schedule, e.g. the sandbox's calibration server, already running at `url`) with
`concurrency` barrier-released threads and returns the client's errors against the truth:
- `ttft_err_ms`: client TTFT - the scheduled TTFT (configured ttft + (chunk-1) x gap, since a
  chunk leaves when its last token is due; the schedule runs from the moment the server read the
  request), so it includes the request's trip to the server;
- `ttft_lag_ms`: client TTFT - true TTFT, where true TTFT = the server's actual write time of
  the first chunk - the client's send stamp (both on the host's CLOCK_MONOTONIC): the client's
  own measurement error, free of the server's scheduling lateness;
- `decode_err_pct`: client decode tok/s / configured rate (1000/gap_ms) - 1, in percent;
- `decode_err_vs_sent_pct`: client decode tok/s / the rate the server actually achieved
  ((n - n_first) / (last write - first write)) - 1, in percent: the client's own error;
- `cpu_us_per_token`: the client's thread CPU time per output token.
Each as a `stats.dist` with n. `python -m sandbox.calibrate` (or `python benchmarks/calibrate.py`)
starts the sandbox's calibration server and prints the table for c = 1, 8, 32.
"""

from __future__ import annotations

from typing import Any

from modeldrop.bench.client import BenchClient, ChatRequest
from modeldrop.bench.load import run_rounds
from modeldrop.bench.stats import dist


def measure(url: str, model: str, concurrency: int, *, ttft_ms: float = 100.0, gap_ms: float = 20.0,
            tokens: int = 64, chunk: int = 1, rounds: int = 3, server_log: Any = None) -> dict[str, Any]:
    """Errors of the client at one concurrency level; `server_log()` returns the server's log."""
    client = BenchClient(url, model)
    calib = {"ttft_ms": ttft_ms, "gap_ms": gap_ms, "chunk": chunk}

    def make(r: int, i: int) -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": f"calibrate r{r} t{i}"}],
                           max_tokens=tokens if r >= 0 else 2, extra_body={"calib": calib if r >= 0 else
                                                                           {"ttft_ms": 1, "gap_ms": 1}})

    recs = run_rounds(client, make, concurrency, rounds, warmup=1)
    sent = {e["id"]: e for e in (server_log() if server_log else [])}
    rate = 1000.0 / gap_ms
    first_due_ms = ttft_ms + (min(chunk, tokens) - 1) * gap_ms
    ok = [r for r in recs if r.ok]
    lags, dec_sent = [], []
    for r in ok:
        e = sent.get(r.response_id or "")
        if not e or not e["t_sent"] or r.ttft is None:
            continue
        lags.append((r.t_send + r.ttft - e["t_sent"][0]) * 1000)
        window = e["t_sent"][-1] - e["t_sent"][0]
        if r.decode_tps and window > 0:
            dec_sent.append((r.decode_tps / ((e["n"] - min(chunk, e["n"])) / window) - 1) * 100)
    out_tokens = sum(r.completion_tokens or 0 for r in ok)
    return {
        "concurrency": concurrency, "requests": len(recs), "errors": len(recs) - len(ok),
        "config": {"ttft_ms": ttft_ms, "gap_ms": gap_ms, "tokens": tokens, "chunk": chunk, "rounds": rounds},
        "ttft_err_ms": dist((r.ttft * 1000 - first_due_ms) for r in ok if r.ttft is not None),
        "ttft_lag_ms": dist(lags),
        "decode_err_pct": dist((r.decode_tps / rate - 1) * 100 for r in ok if r.decode_tps),
        "decode_err_vs_sent_pct": dist(dec_sent),
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

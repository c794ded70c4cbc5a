"""Plots of a run's benchmark checkpoints (matplotlib's object API, Agg), as PNGs in `<run>/plots/`.

Contract
--------
Each function takes finished case payloads (see checkpoints.load_run_cases) and an output dir,
writes its PNGs atomically and returns their paths; with nothing to plot it returns [].
- `sweep_plots`: decode tok/s vs prompt tokens and TTFT vs prompt tokens, one line per output
  length, markers at p50 with whiskers to p95 (x = the server's achieved prompt tokens p50,
  else the target).
- `latency_cdf`: empirical CDF of end-to-end latency, one curve per concurrency level.
- `aggregate_vs_concurrency`: measured aggregate output tok/s vs concurrency, with exo_bench's
  max x N estimate dashed for comparison.
`plots_for_run(run_dir)` draws all that apply; `png_base64(path)` is for pytest-html extras.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modeldrop import atomic
from modeldrop.bench.checkpoints import load_run_cases


def _axes() -> tuple[Any, Any]:
    """A 7x4 in figure and its axes, with matplotlib's object API on Agg (no pyplot state). matplotlib is
    imported on the first plot: every `pytest gates/` run loads this module with the fixtures and draws none."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Any, path: Path) -> Path:
    """Render `fig` as PNG and write it atomically to `path`."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, bbox_inches="tight", format="png")
    atomic.write_bytes(path, buf.getvalue())
    return path


def _x_prompt(p: dict[str, Any]) -> float:
    prompt = p["summary"].get("prompt") or {}
    return prompt.get("achieved_tokens_p50") or p["config"]["params"]["prompt_tokens"]


def sweep_plots(payloads: Sequence[dict[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    rows = [p for p in payloads if p.get("phase") == "token_sweep"]
    if not rows:
        return []
    by_tg: dict[int, list[dict[str, Any]]] = {}
    for p in rows:
        by_tg.setdefault(p["config"]["params"]["max_tokens"], []).append(p)
    out = []
    for metric, label, fname in (("decode_tps", "decode tok/s per request", "sweep_decode_tps.png"),
                                 ("ttft_s", "TTFT (s)", "sweep_ttft.png")):
        fig, ax = _axes()
        for tg, group in sorted(by_tg.items()):
            group = sorted(group, key=_x_prompt)
            xs = [_x_prompt(p) for p in group]
            p50 = [p["summary"][metric]["p50"] or 0 for p in group]
            p95 = [p["summary"][metric]["p95"] or 0 for p in group]
            n = [p["summary"][metric]["n"] for p in group]
            yerr = [[0] * len(p50), [max(b - a, 0) for a, b in zip(p50, p95, strict=True)]]
            ax.errorbar(xs, p50, yerr=yerr, marker="o", capsize=3, label=f"output {tg} (n={min(n)}–{max(n)})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt tokens (server usage, p50)")
        ax.set_ylabel(f"{label}: p50, whisker to p95")
        ax.set_title(f"{title} {label} vs prompt length".strip())
        ax.grid(True, alpha=0.3)
        ax.legend()
        out.append(_save(fig, Path(out_dir) / fname))
    return out


def latency_cdf(payloads: Sequence[dict[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    rows = sorted((p for p in payloads if p.get("phase") == "concurrency"),
                  key=lambda p: p["config"]["params"]["concurrency"])
    if not rows:
        return []
    fig, ax = _axes()
    for p in rows:
        e2e = sorted(r["e2e"] for r in p["requests"] if r.get("ok") and r.get("e2e") is not None)
        if not e2e:
            continue
        ys = [(i + 1) / len(e2e) for i in range(len(e2e))]
        ax.step(e2e, ys, where="post", label=f"c={p['config']['params']['concurrency']} (n={len(e2e)})")
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{title} latency CDF per concurrency".strip())
    ax.grid(True, alpha=0.3)
    ax.legend()
    return [_save(fig, Path(out_dir) / "concurrency_latency_cdf.png")]


def aggregate_vs_concurrency(payloads: Sequence[dict[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    rows = sorted((p for p in payloads if p.get("phase") == "concurrency"),
                  key=lambda p: p["config"]["params"]["concurrency"])
    if not rows:
        return []
    cs = [p["config"]["params"]["concurrency"] for p in rows]
    agg = [p["summary"].get("aggregate_output_tps") or 0 for p in rows]
    exo = [p["summary"].get("exo_style_agg_tps") for p in rows]
    fig, ax = _axes()
    ax.plot(cs, agg, marker="o", label="measured: output tokens / phase wall time")
    if any(v is not None for v in exo):
        ax.plot(cs, [v or 0 for v in exo], linestyle="--", marker="x", label="exo_bench max(gen tps) x N (estimate)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(cs, [str(c) for c in cs])
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("aggregate output tok/s")
    ax.set_title(f"{title} aggregate throughput vs concurrency".strip())
    ax.grid(True, alpha=0.3)
    ax.legend()
    return [_save(fig, Path(out_dir) / "concurrency_aggregate_tps.png")]


def plots_for_run(run_dir: Path, phase: str | None = None, title: str = "") -> list[Path]:
    """Redraw the plots of `phase` (or all) from the run folder's checkpoints."""
    payloads = load_run_cases(run_dir, phase)
    out_dir = Path(run_dir) / "plots"
    paths: list[Path] = []
    if phase in (None, "token_sweep"):
        paths += sweep_plots(payloads, out_dir, title)
    if phase in (None, "concurrency"):
        paths += latency_cdf(payloads, out_dir, title) + aggregate_vs_concurrency(payloads, out_dir, title)
    return paths


def png_base64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")

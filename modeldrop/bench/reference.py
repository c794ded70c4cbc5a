"""Reference figures (from the model profile) and regression against the previous run.

Contract
--------
A case's figures are `{metric: value}` plus `keys`, most specific first (e.g. a sweep case
pp=1024, tg=128 has keys ["1024x128", "1024"]; concurrency 2 has ["2"]). A model profile row may
carry `"reference": {metric: {key: value}}`, e.g.
`{"decode_tps": {"512": 52.0, "1024": 52.0}, "p95_latency_s": {"2": 10.37}}`.
- `compare_reference(figures, keys, reference)` -> one row per metric that has a reference under
  the first matching key: value, reference, ratio = value / reference, and `worse` (ratio < 1 for
  higher-is-better metrics, > 1 otherwise).
- `regression(figures, previous)` -> one row per metric present in both: change_pct =
  (value - previous) / previous x 100, `worse` by the same direction rule.
- `fmt_rows(rows)` -> lines for the ledger, e.g. "decode_tps: -12.0 % vs previous (41.2 vs 46.8) worse".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HIGHER_IS_BETTER = frozenset({"decode_tps", "server_generation_tps", "aggregate_tps", "pass_rate",
                              "prompt_tps"})


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER or metric.endswith("_tps")


def _worse(metric: str, ratio: float) -> bool:
    return ratio < 1.0 if higher_is_better(metric) else ratio > 1.0


def compare_reference(figures: dict[str, float | None], keys: Sequence[str],
                      reference: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Ratios to the profile's reference figures; see module contract."""
    rows: list[dict[str, Any]] = []
    for metric, value in figures.items():
        table = (reference or {}).get(metric)
        if value is None or not isinstance(table, dict):
            continue
        key = next((k for k in keys if isinstance(table.get(k), int | float) and table[k]), None)
        if key is None:
            continue
        ref = float(table[key])
        ratio = value / ref
        rows.append({"metric": metric, "key": key, "value": value, "reference": ref, "ratio": ratio,
                     "worse": _worse(metric, ratio)})
    return rows


def regression(figures: dict[str, float | None], previous: dict[str, float | None] | None,
               previous_run: str | None = None) -> list[dict[str, Any]]:
    """Change against the previous run's figures of the same case; see module contract."""
    rows: list[dict[str, Any]] = []
    for metric, value in figures.items():
        prev = (previous or {}).get(metric)
        if value is None or not prev:
            continue
        change = (value - prev) / prev * 100.0
        rows.append({"metric": metric, "value": value, "previous": prev, "change_pct": change,
                     "worse": _worse(metric, value / prev), "previous_run": previous_run})
    return rows


def fmt_rows(rows: Sequence[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if "ratio" in r:
            out.append(f"{r['metric']}[{r['key']}]: {r['ratio']:.2f}x reference ({r['value']:.4g} vs "
                       f"{r['reference']:.4g}){' worse' if r['worse'] else ''}")
        else:
            out.append(f"{r['metric']}: {r['change_pct']:+.1f} % vs previous ({r['value']:.4g} vs "
                       f"{r['previous']:.4g}){' worse' if r['worse'] else ''}")
    return out

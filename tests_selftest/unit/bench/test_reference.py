"""Reference ratios, regression, plots and the ledger text of a case."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldrop.bench import plots
from modeldrop.bench.checkpoints import write_case
from modeldrop.bench.reference import compare_reference, fmt_rows, regression
from modeldrop.bench.report import format_case
from modeldrop.bench.stats import summarize
from tests_selftest.support.bench_fakes import rec

REF = {"decode_tps": {"512": 52.0, "1024": 52.0, "1024x512": 40.0}, "p95_latency_s": {"2": 10.37}}


def test_reference_uses_the_most_specific_key() -> None:
    rows = compare_reference({"decode_tps": 46.8, "ttft_s": 0.3}, ["1024x128", "1024"], REF)
    assert [(r["metric"], r["key"]) for r in rows] == [("decode_tps", "1024")]
    assert rows[0]["ratio"] == pytest.approx(0.9) and rows[0]["worse"]
    rows = compare_reference({"decode_tps": 44.0}, ["1024x512", "1024"], REF)
    assert rows[0]["key"] == "1024x512" and not rows[0]["worse"]
    lat = compare_reference({"p95_latency_s": 12.0}, ["2"], REF)[0]
    assert lat["worse"] and lat["ratio"] > 1  # lower is better for latency
    assert compare_reference({"decode_tps": 1.0}, ["256"], REF) == []
    assert compare_reference({"decode_tps": 1.0}, ["512"], None) == []


def test_regression_direction_and_text() -> None:
    rows = regression({"decode_tps": 41.2, "p95_latency_s": 9.0, "new": 1.0}, {"decode_tps": 46.8, "p95_latency_s": 10.0},
                      "20260101T000000Z-org--m")
    by = {r["metric"]: r for r in rows}
    assert set(by) == {"decode_tps", "p95_latency_s"}
    assert by["decode_tps"]["change_pct"] == pytest.approx(-11.97, abs=0.01) and by["decode_tps"]["worse"]
    assert not by["p95_latency_s"]["worse"]
    text = fmt_rows(rows)
    assert text[0].startswith("decode_tps: -12.0 % vs previous") and text[0].endswith("worse")


def _payload(phase: str, params: dict, recs: list, case_id: str, concurrency: int = 1) -> dict:
    s = summarize(recs, concurrency=concurrency)
    if phase == "token_sweep":
        s["prompt"] = {"target_tokens": params["prompt_tokens"], "predicted_tokens": params["prompt_tokens"],
                       "method": "usage-calibrated", "achieved_tokens_p50": params["prompt_tokens"] + 1, "achieved_n": 2}
    return {"case_id": case_id, "phase": phase, "model_id": "org/m", "fingerprint": "fp", "config": {"params": params},
            "config_key": "k", "summary": s, "requests": [r.to_dict() for r in recs], "figures": {}, "reference": [],
            "regression": [], "reused_from": None}


def test_plots_and_case_text(tmp_path: Path) -> None:
    for pp in (128, 512, 1024):
        for tg in (32, 128):
            recs = [rec(0.0, 0.01 * pp / 128, 0.02, tg, gen_tps=50.0) for _ in range(3)]
            write_case(tmp_path, _payload("token_sweep", {"prompt_tokens": pp, "max_tokens": tg}, recs,
                                          f"token_sweep-pp{pp}-tg{tg}"))
    for c in (1, 2, 4):
        recs = [rec(0.001 * i, 0.1 * c, 0.02, 20, gen_tps=50.0) for i in range(2 * c)]
        write_case(tmp_path, _payload("concurrency", {"concurrency": c}, recs, f"concurrency-c{c}", c))
    paths = plots.plots_for_run(tmp_path, title="org/m")
    assert sorted(p.name for p in paths) == ["concurrency_aggregate_tps.png", "concurrency_latency_cdf.png",
                                              "sweep_decode_tps.png", "sweep_ttft.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.parent == tmp_path / "plots" for p in paths)
    assert plots.plots_for_run(tmp_path, phase="thinking") == []
    assert plots.png_base64(paths[0]).startswith("iVBOR")

    payload = _payload("token_sweep", {"prompt_tokens": 512, "max_tokens": 32},
                       [rec(0.0, 0.2, 0.02, 32, gen_tps=55.0)], "token_sweep-pp512-tg32")
    payload["reference"] = compare_reference({"decode_tps": 50.0}, ["512x32", "512"], REF)
    text = format_case(payload, "/x/bench/token_sweep-pp512-tg32.json")
    assert "(n=1, n<20: p95/p99 ≈ max)" in text and "TTFT  p50 200.0" in text
    assert "server generation_tps    p50 55.0" in text and "estimate" in text
    assert "decode_tps[512]: 0.96x reference" in text and "no earlier measured run" in text

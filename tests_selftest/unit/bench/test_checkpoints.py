"""Atomic case checkpoints, reuse lookup across run folders, and the heartbeat."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from modeldrop.bench import checkpoints as ck
from modeldrop.bench.heartbeat import Heartbeat

MODEL = "org/model"


def payload(case_id: str = "token_sweep-pp128-tg32", fp: str = "fp1", key: str = "k1", **extra: object) -> dict:
    return {"case_id": case_id, "model_id": MODEL, "fingerprint": fp, "config_key": key, "summary": {"ok": 1},
            "figures": {"decode_tps": 10.0}, "reused_from": None} | extra


def test_write_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    path = ck.write_case(tmp_path, payload())
    assert path == tmp_path / "bench" / "token_sweep-pp128-tg32.json"
    assert json.loads(path.read_text())["schema"] == ck.SCHEMA
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_failed_replace_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ck.write_case(tmp_path, payload(figures={"decode_tps": 1.0}))

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        ck.write_case(tmp_path, payload(figures={"decode_tps": 2.0}))
    assert json.loads(path.read_text())["figures"] == {"decode_tps": 1.0}
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def _runs(reports: Path) -> tuple[Path, Path, Path]:
    old = reports / "20260101T000000Z-org--model"
    older_dup = reports / "20260101T000000Z-org--model-2"
    cur = reports / "20260105T000000Z-org--model"
    for p in (old, older_dup, cur):
        p.mkdir(parents=True)
    return old, older_dup, cur


def test_find_done_current_then_previous_runs(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    old, dup, cur = _runs(reports)
    other_model = reports / "20260109T000000Z-org--model-v2"
    other_model.mkdir()
    ck.write_case(other_model, payload())  # another model: never matches
    assert ck.find_done("token_sweep-pp128-tg32", "fp1", "k1", cur, reports, MODEL) is None
    ck.write_case(old, payload())
    ck.write_case(dup, payload(fp="fp2"))
    found = ck.find_done("token_sweep-pp128-tg32", "fp1", "k1", cur, reports, MODEL)
    assert found is not None and found[0].parent.parent == old
    assert ck.find_done("token_sweep-pp128-tg32", "fp1", "k2", cur, reports, MODEL) is None  # config differs
    assert ck.find_done("token_sweep-pp128-tg32", "fp3", "k1", cur, reports, MODEL) is None  # fingerprint differs
    ck.write_case(cur, payload())
    found = ck.find_done("token_sweep-pp128-tg32", "fp1", "k1", cur, reports, MODEL)
    assert found is not None and found[0].parent.parent == cur
    (reports / "latest").symlink_to(cur.name)
    assert [p.name for p in ck._model_runs(reports, MODEL, cur)] == [dup.name, old.name]


def test_unfinished_or_corrupt_checkpoints_are_skipped(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    old, dup, cur = _runs(reports)
    ck.write_case(dup, payload(summary=None))
    (old / "bench").mkdir()
    (old / "bench" / "token_sweep-pp128-tg32.json").write_text("{half")
    assert ck.find_done("token_sweep-pp128-tg32", "fp1", "k1", cur, reports, MODEL) is None


def test_previous_measurement_skips_reused_copies(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    old, dup, cur = _runs(reports)
    ck.write_case(old, payload(figures={"decode_tps": 5.0}))
    ck.write_case(dup, payload(reused_from=str(old)))
    prev = ck.previous_measurement("token_sweep-pp128-tg32", MODEL, reports, cur)
    assert prev is not None and prev[0].parent.parent == old and prev[1]["figures"] == {"decode_tps": 5.0}
    assert ck.previous_measurement("nope", MODEL, reports, cur) is None


def test_heartbeat_every_n_and_on_a_timer() -> None:
    lines: list[str] = []
    with Heartbeat("concurrency", "concurrency-c4", 10, sink=lines.append, every_n=3, every_s=0.2) as hb:
        for _ in range(6):
            hb.tick(tokens=32)
        assert sum(" 3/10 " in ln for ln in lines) == 1 and sum(" 6/10 " in ln for ln in lines) == 1
        deadline = time.monotonic() + 5
        while not any("waiting" in ln for ln in lines) and time.monotonic() < deadline:
            time.sleep(0.01)  # poll with a deadline for the timer's line
        assert any("waiting" in ln and "concurrency-c4 6/10" in ln for ln in lines)
    assert lines[0].endswith("start") and lines[-1].endswith("done")
    assert all(ln.startswith("bench concurrency concurrency-c4 ") and "elapsed" in ln and "tok/s" in ln for ln in lines)


def test_previous_measurement_ignores_a_model_whose_folder_name_extends_this_one(tmp_path):
    """`org/m` must not take `org/m-7`'s results as its previous run (run folder names alone are ambiguous)."""
    from modeldrop.bench import checkpoints as ck

    other = tmp_path / "20261101T000000Z-org--m-7"
    ck.write_case(other, {"case_id": "c1", "model_id": "org/m-7", "fingerprint": "f", "config_key": "k",
                          "summary": {"decode_tps": 1.0}})
    current = tmp_path / "20261102T000000Z-org--m"
    assert ck.previous_measurement("c1", "org/m", tmp_path, current) is None
    assert ck.previous_measurement("c1", "org/m-7", tmp_path, current) is not None

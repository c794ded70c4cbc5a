"""Files several runs share: an unreadable pass_cache.json is never replaced silently (one line, the file kept
aside), and two runs writing model_profiles.json at once keep both rows (a file lock around read-merge-write)."""

from __future__ import annotations

import threading

import pytest

from modeldrop import profiles
from modeldrop.ledger.passcache import PassCache

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("content", ["{not json", '["a list"]', '{"passes": 5}'])
def test_an_unreadable_pass_cache_is_set_aside_and_said_in_one_line(tmp_path, content):
    path = tmp_path / "pass_cache.json"
    path.write_text(content)
    said: list[str] = []
    cache = PassCache(path, warn=said.append)
    assert cache.lookup("preflight", "fp", 3600) is None  # a corrupt cache never stops a run
    assert len(said) == 1 and "\n" not in said[0] and str(path) in said[0], said
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("pass_cache.json.unreadable-")]
    assert len(aside) == 1 and aside[0].read_text() == content and aside[0].name in said[0]
    cache.record("preflight", "fp", "run-1")
    assert cache.lookup("preflight", "fp", 3600).run_id == "run-1" and len(said) == 1
    assert aside[0].read_text() == content  # still there after the new cache was written


def test_a_readable_pass_cache_says_nothing(tmp_path):
    said: list[str] = []
    cache = PassCache(tmp_path / "pass_cache.json", warn=said.append)
    cache.record("preflight", "fp", "run-1")
    assert PassCache(cache.path, warn=said.append).lookup("preflight", "fp", 3600) is not None and said == []


def test_two_runs_writing_profiles_at_once_keep_both_rows(tmp_path, monkeypatch):
    path = tmp_path / "model_profiles.json"
    real_load = profiles.load
    a_loaded, b_done = threading.Event(), threading.Event()

    def slow_load(p):  # run A reads, then is slow to write (B gets its chance meanwhile)
        data = real_load(p)
        if threading.current_thread().name == "run-a":
            a_loaded.set()
            b_done.wait(1.0)
        return data

    monkeypatch.setattr(profiles, "load", slow_load)
    errors: list[BaseException] = []

    def run(model: str) -> None:
        try:
            profiles.record_bootstrap(path, model, {"total_size_bytes": 1})
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors.append(e)
        finally:
            if threading.current_thread().name == "run-b":
                b_done.set()

    a = threading.Thread(target=run, args=("org/model-a",), name="run-a")
    a.start()
    assert a_loaded.wait(10)
    b = threading.Thread(target=run, args=("org/model-b",), name="run-b")
    b.start()
    a.join(20)
    b.join(20)
    assert not errors, errors
    assert set(real_load(path)["models"]) == {"org/model-a", "org/model-b"}

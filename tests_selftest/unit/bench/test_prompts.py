"""Prompt sizing: with the model's own tokenizer (the sandbox's tiny model) and by server usage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldrop.bench.cases import make_sizer
from modeldrop.bench.client import BenchClient, ChatRequest
from modeldrop.bench.prompts import PROBE_WORDS, PromptSizer
from sandbox.calibration_server import CalibServer, prompt_tokens_of


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sandbox.model import generate_model

    out = tmp_path_factory.mktemp("tiny-model")
    generate_model(out, layers=1, hidden=64, vocab=512)
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[CalibServer]:
    srv = CalibServer.start()
    yield srv
    srv.stop()


def test_tokenizer_sizing_hits_the_target(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    sizer = PromptSizer(tokenizer_dir=tokenizer_dir)
    assert sizer.method == "tokenizer"
    for target in (128, 640, 2048):
        built = sizer.build(target, salt=0)
        ids = tok.apply_chat_template(built.messages, add_generation_prompt=True, tokenize=True)
        n = len(ids["input_ids"] if hasattr(ids, "keys") else ids)
        assert n == built.predicted_tokens and target - 2 <= n <= target, (target, n)
        assert built.method == "tokenizer"


def test_usage_calibrated_sizing(server: CalibServer) -> None:
    client = BenchClient(server.url, server.model)
    server.reset_log()
    sizer = make_sizer(client, tokenizer_dir=None)
    assert sizer.ensure_calibrated() == "usage-calibrated"
    assert [e["n"] for e in server.log()] == [1, 1]  # two probes of one token each
    assert [p["words"] for p in sizer.describe()["probes"]] == list(PROBE_WORDS)
    for target in (128, 1000, 4096):
        built = sizer.build(target, salt=42)
        achieved = prompt_tokens_of(built.messages)
        assert abs(achieved - target) <= 2 + 0.0025 * target, (target, achieved)  # fit from 2 rounded counts
        rec = client.send(ChatRequest(messages=built.messages, max_tokens=1, stream=False))
        assert rec.prompt_tokens == achieved


def test_without_tokenizer_or_server_it_says_heuristic(tmp_path: Path) -> None:
    sizer = PromptSizer(tokenizer_dir=tmp_path, probe=lambda m: None)
    built = sizer.build(500)
    assert built.method == "heuristic" and built.filler_words > 100


def test_salt_changes_the_prompt_start_only(tokenizer_dir: Path) -> None:
    sizer = PromptSizer(tokenizer_dir=tokenizer_dir)
    a, b = sizer.build(256, salt=1), sizer.build(256, salt=2)
    assert a.messages != b.messages and a.messages[0]["content"][8:] == b.messages[0]["content"][8:]

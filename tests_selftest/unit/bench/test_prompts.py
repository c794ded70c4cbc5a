"""Prompt sizing: exactly the asked token count per request, with the model's own tokenizer (the sandbox's
tiny model) and by the server's usage (the calibration server, and a server whose count the fit misses)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldrop.bench.cases import make_sizer
from modeldrop.bench.client import BenchClient, ChatRequest
from modeldrop.bench.prompts import PROBES, SALT_ORDERS, PromptSizer, messages_for, salt_text
from sandbox.calibration_server import CalibServer, prompt_tokens_of

TARGETS = (128, 129, 640, 2048)
SALTS = tuple(range(0, 40320, 2017))  # 20 salts across the whole range


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sandbox.model import generate_model

    out = tmp_path_factory.mktemp("tiny-model")
    generate_model(out, layers=1, hidden=64, vocab=512)
    return out


@pytest.fixture(scope="module")
def count(tokenizer_dir: Path) -> Any:
    """The model's own count, independent of the sizer: transformers' chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)

    def n(messages: list[dict[str, Any]]) -> int:
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return n


@pytest.fixture(scope="module")
def server() -> Iterator[CalibServer]:
    srv = CalibServer.start()
    yield srv
    srv.stop()


def test_every_salt_gets_exactly_the_target(tokenizer_dir: Path, count: Any) -> None:
    sizer = PromptSizer(tokenizer_dir=tokenizer_dir)
    assert sizer.method == "tokenizer" and sizer.local
    for target in TARGETS:
        built = [sizer.build(target, salt=s) for s in SALTS]
        assert [count(b.messages) for b in built] == [target] * len(SALTS), target
        assert all(b.exact and b.predicted_tokens == target for b in built)
        assert len({b.messages[0]["content"] for b in built}) == len(SALTS)  # no two requests alike


def test_salt_words_keep_the_count_and_never_repeat_within_a_cycle(count: Any) -> None:
    assert len({count(messages_for(60, s)) for s in range(0, SALT_ORDERS, 97)}) == 1
    assert len({salt_text(s) for s in range(SALT_ORDERS)}) == SALT_ORDERS
    assert salt_text(0) != salt_text(1) and salt_text(0).split()[0] != salt_text(1).split()[0]


def test_a_salt_that_moves_the_count_is_sized_again(count: Any) -> None:
    """A tokenizer where some salts cost a token more (as a six-digit salt did in a real one): every request
    is still exactly the target, because each salt's prompt is counted and searched again when it moved."""
    def uneven(messages: list[dict[str, Any]]) -> int:
        return count(messages) + (1 if messages[0]["content"].startswith("[ birch") else 0)

    sizer = PromptSizer(counter=uneven)
    first = sizer.build(512, salt=0)
    moved = [s for s in range(16) if uneven(messages_for(first.filler_words, s, first.pad)) != 512]
    assert moved, "the test needs salts whose count moves at the first salt's shape"
    for s in range(16):
        assert uneven(sizer.build(512, salt=s).messages) == 512, s


def test_usage_calibrated_sizing_is_exact_on_the_server(server: CalibServer) -> None:
    client = BenchClient(server.url, server.model)
    server.reset_log()
    sizer = make_sizer(client, tokenizer_dir=None)
    assert sizer.ensure_calibrated() == "usage-calibrated" and not sizer.local
    assert [e["n"] for e in server.log()] == [1, 1, 1]  # three probes of one token each
    assert [(p["words"], p["pads"]) for p in sizer.describe()["probes"]] == list(PROBES)
    for target in (128, 1000, 4096):
        for salt in (0, 42, 40000):
            built = sizer.build(target, salt=salt)
            rec = client.send(ChatRequest(messages=built.messages, max_tokens=1, stream=False))
            assert rec.prompt_tokens == prompt_tokens_of(built.messages) == target, (target, salt)


class Drifting:
    """A server count the linear fit misses: `extra` tokens more once a prompt is longer than `above` words
    (longer than the longest probe, so the fit never saw it)."""

    def __init__(self, extra: int, above: int = 1100):
        self.extra, self.above, self.calls = extra, above, 0

    def __call__(self, messages: list[dict[str, Any]]) -> int:
        self.calls += 1
        words = sum(len(str(m["content"]).split()) for m in messages)
        return prompt_tokens_of(messages) + (self.extra if words > self.above else 0)


@pytest.mark.parametrize("extra", [5, -3, 60])  # pads up, pads down, more than the pads: words trimmed
def test_usage_sizing_follows_the_servers_count(extra: int) -> None:
    server = Drifting(extra)
    sizer = PromptSizer(probe=server)
    assert sizer.ensure_calibrated() == "usage-calibrated" and server.calls == 3
    target = 3000
    first = sizer.build(target, salt=1)
    assert first.exact and server(first.messages) == target + extra  # the fit believed it; the server did not
    sizer.observe(first, server(first.messages))
    for salt in (2, 3, 4):  # the next requests of the target hit it, whatever their salt
        again = sizer.build(target, salt=salt)
        assert server(again.messages) == target, (extra, salt)
        sizer.observe(again, target)
    assert server(sizer.build(300, salt=5).messages) == 300  # another target keeps the fit's shape


def test_without_a_tokenizer_or_server_it_says_heuristic_and_still_corrects(tmp_path: Path) -> None:
    sizer = PromptSizer(tokenizer_dir=tmp_path, probe=lambda m: None)
    built = sizer.build(500)
    assert built.method == "heuristic" and built.filler_words > 100
    truth, seen = Drifting(0), []
    for _ in range(10):  # the heuristic's guess is far off: each server count brings it closer
        seen.append(truth(built.messages))
        sizer.observe(built, seen[-1])
        built = sizer.build(500, salt=built.salt + 1)
    assert seen[0] != 500 and seen[-1] == 500, seen

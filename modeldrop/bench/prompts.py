"""Prompts of a target token count, sized with the model's own tokenizer or by the server.

Contract
--------
`PromptSizer.build(target_tokens, salt) -> BuiltPrompt` returns chat messages whose prompt
(chat template included) is as close as the method allows to `target_tokens`, plus which
method sized it and the count it predicts. Two methods, chosen once per sizer:
- "tokenizer": a local model dir with tokenizer.json (+ chat template) is given; the count is
  `len(apply_chat_template(messages, add_generation_prompt=True))` via `transformers`
  (or `tokenizers` alone, without the template, as "tokenizer-no-template"); the filler word
  count is found by binary search, largest count not above the target.
- "usage-calibrated": no tokenizer; two probe requests (`max_tokens=1`) read the server's
  `usage.prompt_tokens` at two filler sizes, a line is fitted (tokens = a x words + b) and the
  word count for the target is solved from it. If probing fails, "heuristic" (1.3 tokens/word).
The *achieved* count is always the server's `usage.prompt_tokens` of each measured request;
the benchmark records it beside the target and the method.

A salt (fixed width) starts every prompt so that repeats do not hit EXO's prefix cache on
`/v1/chat/completions` (the `/bench` endpoint disables the cache anyway).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("modeldrop.bench")

WORDS = ("river stone market lantern garden window silver morning paper orchard valley engine "
         "harbor candle meadow bridge forest copper signal winter").split()
INSTRUCTION = "Continue the list above with a long, detailed story that uses every word."
PROBE_WORDS = (64, 1024)


@dataclass
class BuiltPrompt:
    messages: list[dict[str, Any]]
    target_tokens: int
    predicted_tokens: int | None
    method: str
    filler_words: int
    pad: int = 0


def filler(n_words: int) -> str:
    """Deterministic filler of exactly `n_words` words."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(n_words))


def messages_for(n_words: int, salt: int = 0, pad: int = 0) -> list[dict[str, Any]]:
    """One user message: salt, `n_words` filler words, `pad` x " ." (fine tuning), the instruction."""
    return [{"role": "user",
             "content": f"[{salt % 1_000_000:06d}] {filler(n_words)}{' .' * pad}\n\n{INSTRUCTION}"}]


TOKENIZER_LIBRARY = "tokenizers"  # what the bench extra (modeldrop[bench]) brings, with transformers for templates


def tokenizer_problem(model_dir: Path) -> str | None:
    """Why `model_dir` cannot size prompts by its tokenizer (the library missing, no tokenizer.json), else None."""
    if importlib.util.find_spec(TOKENIZER_LIBRARY) is None:
        return "the tokenizer library is not installed; install modeldrop with its bench extra (modeldrop[bench])"
    if not (Path(model_dir) / "tokenizer.json").is_file():
        return f"no tokenizer.json in {model_dir}; give the model's local dir (its tokenizer.json and chat template)"
    return None


Counter = Callable[[list[dict[str, Any]]], int]
Probe = Callable[[list[dict[str, Any]]], int | None]


def tokenizer_counter(model_dir: Path) -> tuple[Counter, str]:
    """A token counter from a local model dir, and the method name; raises if none loads."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        if getattr(tok, "chat_template", None):
            def count(msgs: list[dict[str, Any]]) -> int:
                ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
                if isinstance(ids, dict) or hasattr(ids, "keys"):
                    ids = ids["input_ids"]
                return len(ids)
            return count, "tokenizer"
    except Exception as e:  # transformers missing or no config: fall back to tokenizers
        log.info("transformers tokenizer unavailable for %s: %s", model_dir, e)
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    return (lambda msgs: sum(len(raw.encode(str(m["content"])).ids) for m in msgs)), "tokenizer-no-template"


class PromptSizer:
    """Sizes prompts for one model; see module contract. Calibration is done once, lazily."""

    def __init__(self, *, tokenizer_dir: Path | None = None, probe: Probe | None = None):
        self.counter: Counter | None = None
        self.method = "heuristic"
        self.fit: tuple[float, float] = (1.3, 0.0)
        self.calibration: dict[str, Any] = {}
        self._probe = probe
        self._calibrated = False
        self._words: dict[int, tuple[int, int]] = {}
        if tokenizer_dir is not None and (Path(tokenizer_dir) / "tokenizer.json").is_file():
            try:
                self.counter, self.method = tokenizer_counter(Path(tokenizer_dir))
                self._calibrated = True
            except Exception as e:
                log.warning("tokenizer in %s unusable (%s); calibrating by server usage", tokenizer_dir, e)

    def ensure_calibrated(self) -> str:
        """Run the usage probes now if they are due; returns the sizing method."""
        if not self._calibrated:
            self._calibrate()
        return self.method

    def _calibrate(self) -> None:
        self._calibrated = True
        if self._probe is None:
            return
        points = [(w, self._probe(messages_for(w))) for w in PROBE_WORDS]
        self.calibration = {"probes": [{"words": w, "prompt_tokens": p} for w, p in points]}
        (w1, p1), (w2, p2) = points
        if p1 is None or p2 is None or p2 <= p1:
            log.warning("usage probes gave %s; sizing prompts by heuristic", points)
            return
        a = (p2 - p1) / (w2 - w1)
        self.fit = (a, p1 - a * w1)
        self.method = "usage-calibrated"
        self.calibration["fit"] = {"tokens_per_word": a, "overhead_tokens": self.fit[1]}

    def predict(self, n_words: int, pad: int = 0, salt: int = 0) -> int:
        if self.counter is not None:
            return self.counter(messages_for(n_words, salt, pad))
        a, b = self.fit
        return round(a * n_words + b)

    def words_for(self, target: int) -> tuple[int, int]:
        """(filler words, pad) whose predicted count is the largest not above `target`."""
        if not self._calibrated:
            self._calibrate()
        if target not in self._words:
            self._words[target] = self._search(target)
        return self._words[target]

    def _search(self, target: int) -> tuple[int, int]:
        if self.counter is None:
            a, b = self.fit
            return max(1, round((target - b) / a)), 0
        lo, hi = 1, max(2, target * 2)
        while lo < hi:  # largest word count not above the target
            mid = (lo + hi + 1) // 2
            if self.predict(mid) <= target:
                lo = mid
            else:
                hi = mid - 1
        best = (lo, 0)
        for pad in range(1, 33):  # then " ." atoms to close the last few tokens
            got = self.predict(lo, pad)
            if got > target:
                break
            best = (lo, pad)
            if got == target:
                break
        return best

    def build(self, target_tokens: int, salt: int = 0) -> BuiltPrompt:
        n, pad = self.words_for(target_tokens)
        return BuiltPrompt(messages=messages_for(n, salt, pad), target_tokens=target_tokens,
                           predicted_tokens=self.predict(n, pad, salt), method=self.method,
                           filler_words=n, pad=pad)

    def describe(self) -> dict[str, Any]:
        """Method and calibration data, for the case JSON."""
        return {"method": self.method, **self.calibration}

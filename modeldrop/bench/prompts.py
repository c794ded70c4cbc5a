"""Prompts of an exact token count, sized with the model's own tokenizer or by the server's usage.

Contract
--------
`PromptSizer.build(target_tokens, salt) -> BuiltPrompt` returns chat messages whose prompt (chat
template included) has exactly `target_tokens` tokens by the method's count, the count it predicts
(`predicted_tokens`) and whether that is the target (`exact`). Two methods, chosen once per sizer:
- "tokenizer": a local model dir with tokenizer.json (+ chat template) is given; the count is
  `len(apply_chat_template(messages, add_generation_prompt=True))` via `transformers` (or
  `tokenizers` alone, without the template, as "tokenizer-no-template"). For each target the filler
  word count is found by binary search and closed with pad atoms (" a", one token) and, where a pad
  atom is not one token, tail dots ("."); every request's prompt is counted with its own salt, and
  searched again for that salt if the count moved.
- "usage-calibrated": no tokenizer; three probe requests (`max_tokens=1`) read the server's
  `usage.prompt_tokens` for 64 and 1024 filler words and for 64 words + 64 pad atoms; the fit
  (tokens = a x words + c x pads + b) gives the first guess, and `observe(built, server_count)`
  moves the pad count (or trims words) by what the server counted for a request of that target, so
  the next request of the target is exact (the warm-up, sent first with the measured shape, is the
  first such observation). If probing fails, "heuristic" (1.3 tokens/word), still corrected by
  `observe`.
The *achieved* count is always the server's `usage.prompt_tokens` of each measured request; the
benchmark records it per request beside the target and flags a case whose requests drift.

The salt that keeps repeats off EXO's prefix cache is an order of eight fixed words (`salt_text`): a
different order per salt, the same words, so the same token count in any tokenizer that splits at
spaces (a six-digit salt tokenizes into a number of tokens that depends on its digits).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("modeldrop.bench")

WORDS = ("river stone market lantern garden window silver morning paper orchard valley engine "
         "harbor candle meadow bridge forest copper signal winter").split()
SALT_WORDS = ("amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron")
SALT_ORDERS = math.factorial(len(SALT_WORDS))  # distinct salts before they repeat
INSTRUCTION = "Continue the list above with a long, detailed story that uses every word."
PAD_ATOM = " a"  # one token in byte-level BPE and SentencePiece alike (a word of its own: never merged)
TAIL_ATOM = "."
MAX_TAIL = 3
PROBES = ((64, 0), (1024, 0), (64, 64))  # (filler words, pad atoms) of the usage probes
MAX_PAD = 64


@dataclass
class BuiltPrompt:
    messages: list[dict[str, Any]]
    target_tokens: int
    predicted_tokens: int | None
    method: str
    filler_words: int
    pad: int = 0
    salt: int = 0
    tail: int = 0

    @property
    def exact(self) -> bool:
        """The method's count is the target (for "usage-calibrated": as far as the server's counts so far say)."""
        return self.predicted_tokens == self.target_tokens


def filler(n_words: int) -> str:
    """Deterministic filler of exactly `n_words` words."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(n_words))


def salt_text(salt: int) -> str:
    """The salt as an order of SALT_WORDS (a permutation by the salt's factorial-base digits)."""
    pool, s, out = list(SALT_WORDS), salt % SALT_ORDERS, []
    for k in range(len(pool), 0, -1):
        s, i = divmod(s, k)
        out.append(pool.pop(i))
    return " ".join(out)


def messages_for(n_words: int, salt: int = 0, pad: int = 0, tail: int = 0) -> list[dict[str, Any]]:
    """One user message: the salt, `n_words` filler words, `pad` pad atoms and `tail` dots (fine tuning), the
    instruction."""
    body = f"{filler(n_words)}{PAD_ATOM * pad}{TAIL_ATOM * tail}"
    return [{"role": "user", "content": f"[ {salt_text(salt)} ] {body}\n\n{INSTRUCTION}"}]


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
    """Sizes prompts for one model; see module contract. Calibration is done once, lazily; thread-safe."""

    def __init__(self, *, tokenizer_dir: Path | None = None, probe: Probe | None = None,
                 counter: Counter | None = None):
        self.counter: Counter | None = counter  # a ready counter (method "tokenizer") instead of a model dir
        self.method = "heuristic"
        self.fit: tuple[float, float, float] = (1.3, 1.0, 0.0)  # tokens per word, per pad atom, overhead
        self.calibration: dict[str, Any] = {}
        self._probe = probe
        self._calibrated = False
        self._shape: dict[int, tuple[int, int, int]] = {}  # target -> (words, pads, tail) that hit it last
        self._corrections: dict[int, int] = {}  # target -> times the server's count moved the shape
        self._lock = threading.RLock()
        if counter is not None:
            self.method, self._calibrated = "tokenizer", True
        elif tokenizer_dir is not None and (Path(tokenizer_dir) / "tokenizer.json").is_file():
            try:
                self.counter, self.method = tokenizer_counter(Path(tokenizer_dir))
                self._calibrated = True
            except Exception as e:
                log.warning("tokenizer in %s unusable (%s); calibrating by server usage", tokenizer_dir, e)

    @property
    def local(self) -> bool:
        """True when counts come from a local tokenizer (no server round trip)."""
        return self.counter is not None

    def ensure_calibrated(self) -> str:
        """Run the usage probes now if they are due; returns the sizing method."""
        with self._lock:
            if not self._calibrated:
                self._calibrate()
        return self.method

    def _calibrate(self) -> None:
        self._calibrated = True
        if self._probe is None:
            return
        got = [self._probe(messages_for(w, 0, p)) for w, p in PROBES]
        self.calibration = {"probes": [{"words": w, "pads": p, "prompt_tokens": n} for (w, p), n in zip(PROBES, got,
                                                                                                     strict=True)]}
        (w1, _), (w2, _), (_, p3) = PROBES
        if None in got or got[1] <= got[0] or got[2] <= got[0]:
            log.warning("usage probes gave %s; sizing prompts by heuristic", got)
            return
        a = (got[1] - got[0]) / (w2 - w1)
        c = (got[2] - got[0]) / p3
        self.fit = (a, c, got[0] - a * w1)
        self.method = "usage-calibrated"
        self.calibration["fit"] = {"tokens_per_word": a, "tokens_per_pad": c, "overhead_tokens": self.fit[2]}

    # ---- counting ------------------------------------------------------------------------------
    def predict(self, n_words: int, pad: int = 0, salt: int = 0, tail: int = 0) -> int:
        """The count of a prompt: the tokenizer's, else the fit's (which has no tail)."""
        if self.counter is not None:
            return self.counter(messages_for(n_words, salt, pad, tail))
        a, c, b = self.fit
        return round(a * n_words + c * pad + b)

    def _search(self, target: int, salt: int) -> tuple[int, int, int]:
        """(words, pads, tail) whose count is the target, else the largest count below it (tokenizer: by
        counting; fit: solved, leaving a few pad atoms either way for the server's corrections)."""
        if self.counter is None:
            a, c, b = self.fit
            words = max(1, math.floor((target - b - 8 * c) / a))
            return words, max(0, round((target - b - a * words) / c)), 0
        lo, hi = 1, max(2, target * 2)
        while lo < hi:  # largest word count not above the target
            mid = (lo + hi + 1) // 2
            if self.predict(mid, 0, salt) <= target:
                lo = mid
            else:
                hi = mid - 1
        best, best_n = (lo, 0, 0), self.predict(lo, 0, salt)
        for pad in range(MAX_PAD + 1):  # then pad atoms and tail dots close the last few tokens
            if pad and self.predict(lo, pad, salt) > target:
                break
            for tail in range(MAX_TAIL + 1):
                got = self.predict(lo, pad, salt, tail)
                if got == target:
                    return lo, pad, tail
                if best_n < got < target:
                    best, best_n = (lo, pad, tail), got
        return best

    def build(self, target_tokens: int, salt: int = 0) -> BuiltPrompt:
        """Messages of `target_tokens` tokens with this salt; see module contract."""
        with self._lock:
            if not self._calibrated:
                self._calibrate()
            if target_tokens not in self._shape:
                self._shape[target_tokens] = self._search(target_tokens, salt)
            n, pad, tail = self._shape[target_tokens]
        got = self.predict(n, pad, salt, tail)
        if self.counter is not None and got != target_tokens:  # this salt counts differently: search for it
            n, pad, tail = self._search(target_tokens, salt)
            got = self.predict(n, pad, salt, tail)
        elif self.counter is None and target_tokens in self._corrections:
            got = target_tokens  # the shape the server's count was corrected to
        return BuiltPrompt(messages=messages_for(n, salt, pad, tail), target_tokens=target_tokens,
                           predicted_tokens=got, method=self.method, filler_words=n, pad=pad, salt=salt, tail=tail)

    def observe(self, built: BuiltPrompt, server_tokens: int | None) -> None:
        """The server counted `server_tokens` for `built`: when it is not the target, move the target's shape by
        the difference (pads first, words when pads run out), so the next request of the target hits it."""
        if self.counter is not None or server_tokens is None or server_tokens == built.target_tokens:
            return
        a, c, _ = self.fit
        c = max(c, 1e-6)
        with self._lock:
            n, pad = built.filler_words, built.pad + round((built.target_tokens - server_tokens) / c)
            if not 0 <= pad <= MAX_PAD:  # move the surplus (or the shortfall) into filler words, keep a few pads
                moved = round((pad - 8) * c / a)
                n, pad = max(1, n + moved), max(0, round(pad - moved * a / c))
            self._shape[built.target_tokens] = (n, pad, built.tail)
            self._corrections[built.target_tokens] = self._corrections.get(built.target_tokens, 0) + 1

    def describe(self) -> dict[str, Any]:
        """Method and calibration data, for the case JSON."""
        return {"method": self.method, **self.calibration}

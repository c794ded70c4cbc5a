"""Tasks with checkable answers: exact string, arithmetic, JSON shape, a short instruction.

Contract
--------
`TASKS` is an ordered tuple of `Task(name, prompt, check, example_answer)`. `check(text)`
returns `(passed, detail)`; the text given to it is the answer with any `<think>...</think>`
block removed (thinking models that inline their reasoning). `example_answer` passes its own
check (the self-tests rely on it) and is what a perfect model could say.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

Check = Callable[[str], tuple[bool, str]]


@dataclass(frozen=True)
class Task:
    name: str
    prompt: str
    check: Check
    example_answer: str


def strip_thinking(text: str) -> str:
    """Remove `<think>...</think>` (also an unclosed leading one) and surrounding space."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S)
    if "<think>" in text:
        text = text.split("<think>")[0]
    return text.strip()


def _exact_word(text: str) -> tuple[bool, str]:
    got = text.strip().strip(".\"'`*").strip()
    return got == "PINEAPPLE", f"wanted exactly 'PINEAPPLE', got {got[:80]!r}"


def _arithmetic(text: str) -> tuple[bool, str]:
    nums = re.findall(r"-?\d[\d,]*", text)
    first = nums[0].replace(",", "") if nums else None
    return first == "391", f"wanted 391 as the first number, got {first!r} in {text[:80]!r}"


def _json_shape(text: str) -> tuple[bool, str]:
    m = re.search(r"\{.*\}", text, flags=re.S)
    if not m:
        return False, f"no JSON object in {text[:80]!r}"
    try:
        obj = json.loads(m.group(0))
    except ValueError as e:
        return False, f"invalid JSON ({e}) in {m.group(0)[:80]!r}"
    ok = (isinstance(obj, dict) and isinstance(obj.get("city"), str) and isinstance(obj.get("population"), int)
          and not isinstance(obj.get("population"), bool))
    return ok, f"wanted {{city: str, population: int}}, got {json.dumps(obj)[:80]}"


def _instruction(text: str) -> tuple[bool, str]:
    lines = [ln.strip().lstrip("-*0123456789. ").strip() for ln in text.splitlines() if ln.strip()]
    ok = len(lines) == 3 and all(ln.isalpha() and ln == ln.lower() for ln in lines)
    return ok, f"wanted 3 lowercase single words on 3 lines, got {lines[:5]!r}"


TASKS: tuple[Task, ...] = (
    Task("exact_word", "Reply with exactly one word, in capital letters, and nothing else: PINEAPPLE",
         _exact_word, "PINEAPPLE"),
    Task("arithmetic", "What is 17 multiplied by 23? Answer with only the number.", _arithmetic, "391"),
    Task("json_shape", 'Return only a JSON object with the keys "city" (a string) and "population" '
                       "(an integer) for Paris, and no other text.",
         _json_shape, '{"city": "Paris", "population": 2100000}'),
    Task("instruction", "List exactly three primary colors, one per line, in lowercase, with no other text.",
         _instruction, "red\nyellow\nblue"),
)


def task_by_name(name: str) -> Task:
    for t in TASKS:
        if t.name == name:
            return t
    raise KeyError(name)


def grade(task: Task, text: str) -> tuple[bool, str]:
    return task.check(strip_thinking(text))

"""The serving check of `--exo-api`: is each URL an EXO that answers a chat for the model?

Contract
--------
`check_serving(urls, model_id, chat_timeout_s)` asks every URL, in order, `GET /node_id` (EXO's own
route: a bare JSON string) and then one real chat completion for `model_id` (non-stream, "Say OK.",
8 tokens). It returns one `ServingCheck` per URL when all answered, or raises `InputError` with one
line naming the first URL that did not and what it answered: nothing (refused, timed out), not EXO
(no `/node_id` string), no instance of the model (EXO's 404 `No instance found for model …`, with the
models it does serve when `/state` says), an error, or an empty answer. Two URLs answering as the
same EXO node are refused too. Every call is bounded (`/node_id` and `/state` by `PROBE_TIMEOUT_S`,
the chat by `chat_timeout_s`, in all).
`fingerprint(checks, model_id)` is the benchmark fingerprint of that EXO: model, URLs and node ids.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from typing import Any

from modeldrop.bench.client import quick_chat
from modeldrop.errors import InputError
from modeldrop.exo.client import ExoClient, ExoError, ExoHTTPError, ExoUnreachable
from modeldrop.exo.state import instances
from modeldrop.ledger.handoff import one_line

PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServingCheck:
    """What one URL answered: its EXO node id and the chat through it."""

    url: str
    node_id: str
    model_id: str
    answer: str
    e2e_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    checked_at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _served_models(client: ExoClient) -> list[str] | None:
    """The model ids this EXO has instances of (best effort: None when /state does not say)."""
    try:
        state = client.state(timeout_s=PROBE_TIMEOUT_S)
        return sorted({i.model_id for i in instances(state).values() if i.model_id})
    except (ExoError, ValueError, KeyError, TypeError, AttributeError):
        return None


_UNREACHABLE = (("refused", "connection refused"), ("Name or service not known", "host name not resolved"),
                ("nodename nor servname", "host name not resolved"), ("NameResolution", "host name not resolved"),
                ("No route to host", "no route to host"), ("Network is unreachable", "network unreachable"),
                ("RemoteDisconnected", "closed the connection without an HTTP answer"),
                ("BadStatusLine", "answered, but not HTTP"), ("timed out", "no answer in time"),
                ("Timeout", "no answer in time"), ("deadline", "no answer in time"))


def why_unreachable(text: str) -> str:
    """A short cause for a failed connection (the client's own message when none is known)."""
    return next((why for needle, why in _UNREACHABLE if needle.lower() in text.lower()), one_line(text, 160))


def _node_id(url: str) -> str:
    """EXO's node id at `url`, or InputError saying what answered instead."""
    client = ExoClient(url, timeout_s=PROBE_TIMEOUT_S)
    try:
        return client.node_id()
    except ExoUnreachable as e:
        raise InputError(f"--exo-api {url}: does not answer ({why_unreachable(str(e))}; "
                         f"GET /node_id within {PROBE_TIMEOUT_S:g} s)") from None
    except ExoHTTPError as e:
        raise InputError(f"--exo-api {url}: answers, but is not EXO (GET /node_id gave HTTP {e.status}: "
                         f"{one_line(e.message, 160)})") from None


def check_one(url: str, model_id: str, chat_timeout_s: float) -> ServingCheck:
    """Check one URL; see module contract."""
    node = _node_id(url)
    rec = quick_chat(url, model_id, timeout_s=chat_timeout_s)
    if not rec.ok:
        what = one_line(rec.error or "", 200)
        if rec.status == 404 and "no instance" in what.lower():
            served = _served_models(ExoClient(url, timeout_s=PROBE_TIMEOUT_S))
            serves = "" if served is None else f"; it serves {', '.join(served) or 'no model'}"
            raise InputError(f"--exo-api {url}: EXO node {node} has no instance of {model_id} ({what}){serves}")
        raise InputError(f"--exo-api {url}: EXO node {node} did not answer a chat for {model_id}: "
                         f"{rec.error_kind}: {what}")
    return ServingCheck(url=url, node_id=node, model_id=model_id, answer=(rec.text or rec.reasoning_text)[:200],
                        e2e_s=rec.e2e, prompt_tokens=rec.prompt_tokens, completion_tokens=rec.completion_tokens,
                        checked_at=time.time())


def check_serving(urls: tuple[str, ...] | list[str], model_id: str, chat_timeout_s: float) -> list[ServingCheck]:
    """Check every URL in order; see module contract."""
    checks: list[ServingCheck] = []
    for url in urls:
        c = check_one(url, model_id, chat_timeout_s)
        twin = next((x for x in checks if x.node_id == c.node_id), None)
        if twin is not None:
            raise InputError(f"--exo-api {url}: answers as EXO node {c.node_id}, as {twin.url} does; "
                             "give each node's API once")
        checks.append(c)
    return checks


def fingerprint(checks: list[ServingCheck], model_id: str) -> str:
    """The benchmark fingerprint of an EXO checked by `check_serving`: model, URLs and node ids."""
    text = "\n".join([model_id, *(f"{c.url} {c.node_id}" for c in checks)])
    return "exo-api-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def describe(checks: list[ServingCheck]) -> str:
    """One line for the ledger: which nodes answered, and how fast."""
    parts = [f"{c.url} (node {c.node_id[:12]}, {c.e2e_s:.2f} s)" if c.e2e_s is not None else c.url for c in checks]
    return f"serving check: one chat for {checks[0].model_id} answered through {', '.join(parts)}" if checks else ""

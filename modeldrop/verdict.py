"""The one shape of every gate's judgement (`Verdict`) and the names of the facts signatures match on (`Fact`).

A verdict is ok exactly when it has no problem. `problems` are one line each, worded for the operator;
`warnings` never fail a gate; `summary` is the one line the gate asserts with (a failing verdict's problems
joined, unless it says something better); `details` is the evidence and the numbers behind it (the gate's
evidence JSON); `facts` are the conditions the failure-signature table matches on, keyed by `Fact`, so a
misspelt name fails at once. File verdicts (audit, verify), preflight and the EXO verdicts all use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Fact(StrEnum):
    """The names of verdict facts: what a verdict observed that the failure-signature table matches on."""

    exited = "exited"                # nodes whose exo exited (startup, canary)
    restarted = "restarted"          # nodes whose exo restarted (pid/start time or /node_id changed)
    no_api = "no_api"                # nodes whose API never answered
    node_ids = "node_ids"            # {k: node id} of a healthy startup
    isolated = "isolated"            # nodes seeing fewer than n nodes
    n = "n"                          # the cluster size the verdict expected
    ghosts = "ghosts"                # node ids in /state that no node answers as its own
    missing_edges = "missing_edges"  # a topology edge EXO's placement needs is absent
    no_ring = "no_ring"              # links ("nodeA–nodeB") whose absence leaves no placeable ring
    one_way = "one_way"              # links ("nodeA → nodeB") with no edge back on a ring EXO may pick
    runner_failed = "runner_failed"  # a runner reported RunnerFailed
    errors = "errors"                # the runners' error messages
    vanished = "vanished"            # the instance left /state
    never_created = "never_created"  # the instance never appeared in /state
    stalled = "stalled"              # no runner progress
    runners = "runners"              # runner status labels
    ring_errno = "ring_errno"        # errno values of ring connect errors
    mismatch = "mismatch"            # logged ring hosts differ from /state hostsByNode
    no_socket = "no_socket"          # no ESTABLISHED socket to a ring neighbour
    kinds = "kinds"                  # chat error kinds
    statuses = "statuses"            # chat HTTP statuses
    http_status = "http_status"      # status of the failing request
    http_body = "http_body"          # message of the failing request
    not_listed = "not_listed"        # the canary's model never listed as downloaded
    download_failed = "download_failed"  # exo reported DownloadFailed
    dir_drift = "dir_drift"          # exo found the model in another dir
    port_held = "port_held"          # the API port is held by another process
    pid_lock = "pid_lock"            # exo's pid-file lock is held
    runner_lag = "runner_lag"        # /state runner maps lag while chat works
    model_id = "model_id"            # the model the gate is about
    has_card = "has_card"            # EXO has a model card for the model
    no_card = "no_card"              # EXO has no model card for the model
    add_command = "add_command"      # the command that gives EXO a card
    runner_signal = "runner_signal"  # signals that killed runners
    runner_nodes = "runner_nodes"    # nodes whose runners failed
    no_runner_map = "no_runner_map"  # a multi-shard instance with an empty nodeToRunner
    models_unreadable = "models_unreadable"  # /v1/models could not be read
    card_added = "card_added"        # the gate added EXO's card for the model
    no_runners_no_chat = "no_runners_no_chat"  # no runner of the instance in /state and no chat answered
    offline_join = "offline_join"    # the cluster was isolated while the joins ran offline
    exo_gone = "exo_gone"            # {k: "pid N"}: the cluster's exo processes that died after startup
    unknown_architecture = "unknown_architecture"  # {nodeK: mlx_lm module} the nodes' mlx-lm lacks (serving verdict)
    unloadable_format = "unloadable_format"  # the weight format EXO cannot load: gguf, pytorch, mixed, none
    does_not_fit = "does_not_fit"    # {size_bytes, available_bytes}: EXO's placement rule refuses min_nodes=N
    card_impossible = "card_impossible"  # no built-in card and POST /models/add would fail (why)
    jaccl_errno = "jaccl_errno"      # errno values of `[jaccl] Couldn't connect` lines
    command_id = "command_id"        # EXO's command id of the request that failed (POST /v1/cancel/<id>)
    api_url = "api_url"              # the API the failing request went to
    foreign_exo = "foreign_exo"      # exo processes the run did not start (preflight)


def checked_facts(facts: Mapping[str, Any] | None) -> dict[Fact, Any]:
    """`facts` keyed by `Fact`; an unknown name raises ValueError (a misspelt fact never silently misses)."""
    out: dict[Fact, Any] = {}
    for key, value in (facts or {}).items():
        try:
            out[Fact(key)] = value
        except ValueError:
            raise ValueError(f"unknown verdict fact {key!r}; known: {', '.join(f.value for f in Fact)}") from None
    return out


@dataclass
class Verdict:
    """A gate's judgement; see the module docstring. Build it with `passed`, `failed` or `judged`, or add
    problems to an open one and `settle` it."""

    ok: bool
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    facts: dict[Fact, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.facts = checked_facts(self.facts)
        if self.ok and self.problems:
            raise ValueError(f"a verdict with problems cannot be ok: {self.problems[0]!r}")
        if not self.ok and not self.problems and self.summary:
            self.problems = [self.summary]
        if not self.summary and self.problems:
            self.summary = "; ".join(self.problems)

    @classmethod
    def passed(cls, summary: str, details: Mapping[str, Any] | None = None,
               facts: Mapping[str, Any] | None = None, warnings: Iterable[str] = ()) -> Verdict:
        """An ok verdict that says `summary`."""
        return cls(True, summary, dict(details or {}), dict(facts or {}), [], list(warnings))

    @classmethod
    def failed(cls, problems: str | Iterable[str], details: Mapping[str, Any] | None = None,
               facts: Mapping[str, Any] | None = None, summary: str = "", warnings: Iterable[str] = ()) -> Verdict:
        """A failing verdict: one problem line or several (summary defaults to them joined)."""
        lines = [problems] if isinstance(problems, str) else list(problems)
        return cls(False, summary, dict(details or {}), dict(facts or {}), lines, list(warnings))

    @classmethod
    def judged(cls, problems: Iterable[str], ok_summary: str, details: Mapping[str, Any] | None = None,
               facts: Mapping[str, Any] | None = None, warnings: Iterable[str] = ()) -> Verdict:
        """ok when `problems` is empty (then it says `ok_summary`), else failed with them."""
        lines = list(problems)
        if lines:
            return cls.failed(lines, details, facts, warnings=warnings)
        return cls.passed(ok_summary, details, facts, warnings)

    @classmethod
    def open(cls) -> Verdict:
        """A verdict (not ok yet) to add problems, warnings and details to, then `settle`."""
        return cls(False)

    def settle(self, ok_summary: str = "ok") -> Verdict:
        """ok from the problems added; summary from them, or `ok_summary` (with a warning count)."""
        self.ok = not self.problems
        n = len(self.warnings)
        self.summary = "; ".join(self.problems) if self.problems else (
            ok_summary + (f" ({n} warning{'s' if n != 1 else ''})" if n else ""))
        return self

    def reword(self, prefix: str) -> Verdict:
        """The same verdict with `prefix` in front of its summary and of each problem."""
        self.summary = prefix + self.summary
        self.problems = [prefix + p for p in self.problems]
        return self

    def as_dict(self) -> dict[str, Any]:
        """The verdict as evidence JSON."""
        return {"ok": self.ok, "summary": self.summary, "problems": self.problems, "warnings": self.warnings,
                "details": self.details, "facts": {str(k): v for k, v in self.facts.items()}}

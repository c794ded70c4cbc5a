"""The preflight gate's work in one call: every check of phase 0, in the order the guide runs them, to one verdict.

`run_preflight(nodes, cfg, total, hub_error, rerun, on_each)` runs the file side on every node at once
(`preflight.check_node`), no node listed twice, the hub's file list when `--online`, reach (TCP, around a ring)
and then the SSH login both ways (once nothing else failed) while the exo side (`exo.preflight`, not in an audit)
and after it the serving verdict (`serving.serving_preflight`: will it serve, before the first byte; after, as an
exo the exo side stops frees memory) run on the nodes that answered.
It returns a `PreflightRun`: what each check saw (`evidence()`, for the run folder), the facts later gates
fingerprint (`pre[k].hf`, `builds`), the serving verdict, and the gate's verdict, the serving no-go first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modeldrop.config import RunConfig
from modeldrop.exo.launcher import ExoBuild
from modeldrop.exo.preflight import ExoPreflight, exo_preflight
from modeldrop.nodes import Node
from modeldrop.pernode import together
from modeldrop.preflight import (
    NodePreflight,
    check_node,
    duplicate_problems,
    preflight_verdict,
    reach_problems,
    ssh_login_warnings,
)
from modeldrop.serving import serving_preflight
from modeldrop.verdict import Verdict

OnEach = Callable[..., dict[int, Any]]


@dataclass
class PreflightRun:
    """What preflight saw and decided (see the module docstring)."""

    pre: dict[int, NodePreflight]
    serving: Verdict
    verdict: Verdict
    exo: ExoPreflight | None = None
    logins: dict[str, Any] | None = None

    @property
    def notes(self) -> list[str]:
        """Which exo each node runs (the exo side's lines for the gate's summary)."""
        return list(self.exo.notes) if self.exo else []

    @property
    def builds(self) -> dict[int, ExoBuild]:
        return dict(self.exo.builds) if self.exo else {}

    def evidence(self) -> dict[str, Any]:
        """{evidence name: JSON} of every check that ran, for the run folder."""
        out: dict[str, Any] = {"nodes": {f"node{k}": {"facts": p.facts, "hf": p.hf, "disk": p.disk,
                                                      "present_bytes": p.present_bytes, "located": p.located,
                                                      "leftovers": p.leftovers} for k, p in self.pre.items()}}
        if self.logins is not None:
            out["ssh logins between nodes"] = self.logins
        if self.exo is not None:
            out["exo"] = self.exo.evidence
        out["serving"] = self.serving.details["nodes"]
        return out


def run_preflight(nodes: dict[int, Node], cfg: RunConfig, total: int | None, hub_error: str | None, rerun: str,
                  on_each: OnEach) -> PreflightRun:
    """Every preflight check (see the module docstring); never raises for a node-side problem."""
    pre = on_each(lambda k: check_node(nodes[k], cfg.node(k), cfg, total))
    problems = duplicate_problems(pre, cfg) + [p for k in sorted(pre) for p in pre[k].problems]
    warnings = [w for k in sorted(pre) for w in pre[k].warnings]
    if cfg.online and hub_error:
        problems.append(f"{hub_error} (--online downloads and audits against the hub's file list; check "
                        f"HF_ENDPOINT and the network from this host, or run without --online)")
    if not problems:
        reach, reach_notes = reach_problems(pre, nodes, cfg)
        problems, warnings = problems + reach, warnings + reach_notes
    answered = {k: nodes[k] for k in nodes if pre[k].facts}  # one line per unreachable node is enough
    logins_wanted = not problems

    def exo_then_serving() -> tuple[ExoPreflight | None, Verdict]:
        """The exo side first: an exo it stops (--stop-existing-exo) frees the memory the serving verdict reads."""
        exo = None if cfg.audit else exo_preflight(answered, cfg, rerun)
        return exo, serving_preflight(answered, cfg, on_each)  # will it serve? before the first byte
    (ssh_warnings, logins), (exo, serving) = together(  # the SSH logins meanwhile
        lambda: ssh_login_warnings(nodes, cfg) if logins_wanted else ([], None), exo_then_serving)
    warnings += ssh_warnings
    if exo is not None:
        problems, warnings = problems + exo.problems, warnings + exo.warnings
    problems, warnings = serving.problems + problems, warnings + serving.warnings  # the decisive fact first
    verdict = preflight_verdict(problems, warnings, len(nodes), exo.notes if exo else ())
    return PreflightRun(pre, serving, verdict, exo, logins)

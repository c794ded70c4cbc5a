"""exo processes on a node that this run did not start: found by program (probe `exos`), named by preflight, and
stopped by `--stop-existing-exo`.

`scan(node, programs, addresses, port, exclude)` lists every process on the node that runs exo (EXO.app, Homebrew,
uv tool, pipx, `uv run exo`, `python -m exo`, the configured or looked-up exo), told by its program, never by its
command line alone; `exclude` holds the pids an earlier modeldrop run started (the launcher stops those itself).
`preflight_lines(found, cfg, rerun)` turns them into preflight's problems and warnings: one line per node naming
each process (pid, program, form, owner, API port) and, for the SSH user's own, the one command that clears them
(the run again with `--stop-existing-exo`); another user's exo cannot be stopped by the run and is named with what
to do. `stop_own(node, rows, grace_s)` stops the SSH user's, EXO.app's GUI first, each by pid after the identity
check (start time and executable).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from modeldrop.config import RunConfig

SCAN_TIMEOUT_S = 60.0


class ProbeNode(Protocol):
    def run_probe(self, name: str, args: dict, *, timeout: float) -> dict: ...


@dataclass(frozen=True)
class ForeignExo:
    """One exo process the run did not start (a row of probe `exos`)."""

    pid: int
    start: float | None
    exe: str | None
    cmdline: tuple[str, ...]
    program: str
    form: str
    user: str | None
    own: bool
    api_port: int
    port_from: str
    serving: bool
    parent: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> ForeignExo:
        return cls(int(row["pid"]), row.get("start"), row.get("exe"), tuple(row.get("cmdline") or ()),
                   str(row.get("program")), str(row.get("form")), row.get("user") or str(row.get("uid")),
                   bool(row.get("own")), int(row.get("api_port") or 0), str(row.get("port_from") or ""),
                   bool(row.get("serving")), row.get("parent"))

    def describe(self) -> str:
        """`pid 4242 /opt/homebrew/bin/exo (Homebrew, user alice, API port 52415, serving)`."""
        port = f"API port {self.api_port}" + (" (exo's default)" if self.port_from == "default" else "")
        how = ", serving" if self.serving else ""
        parent = f", started by `{self.parent}`" if self.parent and self.form == "uv run" else ""
        return f"pid {self.pid} {self.program} ({self.form}, user {self.user}, {port}{how}{parent})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def scan(node: ProbeNode, programs: Iterable[str], addresses: list[str], port: int,
         exclude: set[int] | None = None) -> list[ForeignExo]:
    """Every exo process on the node (see the module docstring), the pids in `exclude` left out."""
    rows = node.run_probe("exos", {"programs": [p for p in dict.fromkeys(programs) if p], "addresses": addresses,
                                   "default_port": 52415}, timeout=SCAN_TIMEOUT_S)["exos"]
    return [ForeignExo.of(r) for r in rows if int(r["pid"]) not in (exclude or set())]


def clear_command(rerun: str) -> str:
    """The one command that clears the SSH user's foreign exo: this run again with --stop-existing-exo."""
    return f"{rerun} --stop-existing-exo" if "--stop-existing-exo" not in rerun.split() else rerun


def preflight_lines(found: dict[int, list[ForeignExo]], cfg: RunConfig, rerun: str) -> tuple[list[str], list[str]]:
    """(problems, warnings) for the exo processes found on each node (see the module docstring)."""
    problems, warnings = [], []
    for k, rows in sorted(found.items()):
        nc = cfg.node(k)
        where = f"{nc.name} ({nc.target})"
        own = [r for r in rows if r.own]
        if own:
            listed = "; ".join(r.describe() for r in own)
            if cfg.stop_existing_exo:
                warnings.append(f"{where}: exo this run did not start: {listed}; --stop-existing-exo stops it by pid "
                                f"before exo starts there")
            else:
                problems.append(f"{where}: exo this run did not start is running: {listed}")
        for r in rows:
            if r.own:
                continue
            line = (f"{where}: {r.user}'s exo is running: {r.describe()}; the run cannot stop another user's process: "
                    f"quit it in {r.user}'s session, or on that node: sudo kill {r.pid}")
            (problems if r.serving and r.api_port == cfg.api_port else warnings).append(line)
    if any(r.own for rows in found.values() for r in rows) and not cfg.stop_existing_exo:
        problems.append(f"clear them with one command: {clear_command(rerun)} (stops only the SSH user's exo listed "
                        f"above, each by pid after an identity check; STOP_EXISTING_EXO=true in the env file does it "
                        f"on every run)")
    return problems, warnings


def stop_own(node: ProbeNode, rows: list[ForeignExo], grace_s: float) -> list[dict[str, Any]]:
    """Stop the SSH user's rows by pid after the identity check (start time, executable): EXO.app's GUI first (it
    would report its runtime's end), then the rest. One result per row."""
    out = []
    for r in sorted((r for r in rows if r.own), key=lambda r: not r.program.endswith("/MacOS/EXO")):
        args: dict[str, Any] = {"pid": r.pid, "expect_start": r.start, "grace_s": grace_s}
        if r.exe:
            args["expect_exe"] = r.exe
        res = node.run_probe("stop", args, timeout=grace_s + 60)
        out.append({"pid": r.pid, "exe": r.exe, "program": r.program, "form": r.form, "cmdline": list(r.cmdline),
                    "result": res.get("result"), "detail": res.get("detail")})
    return out

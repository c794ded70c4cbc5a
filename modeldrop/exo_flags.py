"""EXO's command-line flags: which exist (either generation), which modeldrop sets itself, and a check
of operator extra flags (EXO_EXTRA_ARGS) against a node's `exo --help`.

Beside `exo/` rather than in it: the configuration checks EXO_EXTRA_ARGS with it, and `exo/` is typed with
the configuration (`modeldrop.config`), so the flags table sits below both.

Flags of exo's parser at v1.0.71 (OLD, libp2p) and b5375f8 (NEW, zenoh). modeldrop always sets
`--api-port`, `--namespace` (NEW), `--offline` / `--no-downloads` by role and `-v`, so extra args
may not set those (the run's own settings would be contradicted on some node).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

# flag -> takes a value
EXO_FLAGS: dict[str, bool] = {
    "-q": False, "--quiet": False, "-v": False, "--verbose": False, "-m": False, "--force-master": False,
    "--no-api": False, "--api-port": True, "--no-worker": False, "--no-downloads": False, "--offline": False,
    "--no-batch": False, "--legacy-daemon": False, "--bootstrap-peers": True, "--namespace": True,
    "--zenoh-port": True, "--discovery-port": True, "--libp2p-port": True, "--fast-synch": False,
    "--no-fast-synch": False,
}
MANAGED: dict[str, str] = {
    "--api-port": "EXO_API_PORT", "--namespace": "EXO_NAMESPACE", "--offline": "--online (off by default)",
    "--no-downloads": "the run (the cluster never downloads)", "-v": "the run", "--verbose": "the run",
    "-q": "the run", "--quiet": "the run", "--libp2p-port": "EXO_LIBP2P_PORT",
    "--no-api": "the run (the gates need every node's API)",
}
_BAD = re.compile(r"[\x00-\x1f\x7f]")
# MLX fast synch: exo >= 2026-01-16 (both generations here) has `--fast-synch` / `--no-fast-synch` (a mutually
# exclusive pair that sets EXO_FAST_SYNCH for the runners); the guide starts every exo with --no-fast-synch.
SYNCH_FLAGS = ("--no-fast-synch", "--fast-synch")
GUIDE_SYNCH = "--no-fast-synch"


def parse_extra_args(value: str, where: str) -> tuple[str, ...]:
    """Split EXO_EXTRA_ARGS shell-style and check every flag; ValueError (one line, naming `where`) if bad."""
    try:
        tokens = shlex.split(value or "")
    except ValueError as e:
        raise ValueError(f"{where}: cannot split EXO_EXTRA_ARGS {value!r}: {e}") from None
    i = 0
    while i < len(tokens):
        flag, _, inline = tokens[i].partition("=")
        if _BAD.search(tokens[i]) or flag not in EXO_FLAGS:
            known = " ".join(f for f in EXO_FLAGS if f not in MANAGED)
            raise ValueError(f"{where}: unknown exo flag {tokens[i]!r} in EXO_EXTRA_ARGS; exo's flags: {known}")
        if flag in MANAGED:
            raise ValueError(f"{where}: EXO_EXTRA_ARGS sets {flag}, which modeldrop sets from {MANAGED[flag]}")
        if EXO_FLAGS[flag] and not inline:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("-"):
                raise ValueError(f"{where}: exo flag {flag} in EXO_EXTRA_ARGS needs a value")
            i += 1
        i += 1
    return tuple(tokens)


def flags_of(args: tuple[str, ...]) -> list[str]:
    """The flags (not their values) among extra args, e.g. ('--zenoh-port', '5') -> ['--zenoh-port']."""
    out, skip = [], False
    for t in args:
        if skip:
            skip = False
            continue
        flag, eq, _ = t.partition("=")
        out.append(flag)
        skip = EXO_FLAGS.get(flag, False) and not eq
    return out


def missing_from_help(args: tuple[str, ...], listed: tuple[str, ...] | set[str]) -> list[str]:
    """Extra-arg flags this exo's `--help` does not list (the flag would make exo exit at start)."""
    return [f for f in flags_of(args) if f not in set(listed)]


def libp2p_port_line(port: int | None, generation: str, listed: tuple[str, ...] | set[str]) -> str | None:
    """What EXO_LIBP2P_PORT does with this exo, in one line (None when it is unset)."""
    if not port:
        return None
    if generation == "new":
        return (f"EXO_LIBP2P_PORT={port} is ignored: NEW (zenoh) exo has no libp2p port; its transport listens on "
                "--zenoh-port (default 52414), set with EXO_EXTRA_ARGS='--zenoh-port N'")
    if "--libp2p-port" in set(listed):
        return f"EXO_LIBP2P_PORT={port} is passed as --libp2p-port {port} (OLD, libp2p)"
    return (f"EXO_LIBP2P_PORT={port} is ignored: this OLD exo's --help has no --libp2p-port (flag added 2026-03-25; "
            "the port is OS-assigned)")


@dataclass(frozen=True)
class SynchChoice:
    """What EXO_SYNCH_FLAG comes to on this cluster: `args` go to every exo start (canary and cluster); `lacking`
    names the nodes whose exo does not list the flag ({k: exe}); `problems` stop preflight, `warnings` do not."""

    setting: str
    args: tuple[str, ...]
    lacking: dict[int, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The flag as recorded (launch record, profile): the flag itself, or `none (exo's default)`."""
        return self.args[0] if self.args else "none (exo's default)"


def synch_choice(setting: str, listed: dict[int, tuple[str, tuple[str, ...] | set[str]]],
                 where: str = "EXO_SYNCH_FLAG") -> SynchChoice:
    """EXO_SYNCH_FLAG (`setting`) against each node's `exo --help` ({k: (exe, flags listed)}): `auto` passes the
    guide's --no-fast-synch only when every node lists it (a node that does not: one warning line each, and no
    flag anywhere: the flags are identical on every node); a flag named explicitly is required (a node that does
    not list it: one problem line each); `exo-default` passes none."""
    if setting == "exo-default":
        return SynchChoice(setting, ())
    flag = GUIDE_SYNCH if setting == "auto" else f"--{setting}"
    lacking = {k: exe for k, (exe, flags) in sorted(listed.items()) if flag not in set(flags)}
    if not lacking:
        return SynchChoice(setting, (flag,))
    if setting == "auto":
        return SynchChoice(setting, (), lacking, warnings=tuple(
            f"node{k}: `{exe} --help` does not list {flag}, which the guide starts exo with: every node runs without "
            f"it (exo's default fast synch); install an exo that has it there (exo since 2026-01-16), or set "
            f"EXO_SYNCH_FLAG=exo-default to say so and drop this line" for k, exe in lacking.items()))
    return SynchChoice(setting, (), lacking, problems=tuple(
        f"node{k}: {where} asks for {flag}, which `{exe} --help` does not list (exo would exit on it); install an exo "
        f"that has it there (exo since 2026-01-16), or set EXO_SYNCH_FLAG=auto" for k, exe in lacking.items()))

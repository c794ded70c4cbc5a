"""Nodes: run commands and probes on a cluster node, over SSH (`modeldrop.ssh.SSHNode`) or locally.

Contract:
- `Node.run(argv, timeout=...)` runs an argv list and returns a `CommandResult`; it never raises for a
  non-zero exit, raises `CommandTimeout` (with partial output) past the timeout and `NodeError` when the
  node cannot be reached. `stream` is the same with each output line passed to `on_line` as it arrives.
- On SSH nodes the command is a /bin/sh script (`unset X; export K='v'; exec argv`, shlex-quoted) handed to
  the account's login shell as `/bin/sh -c '<script>'`, or, when the script holds characters some login
  shell would still interpret inside single quotes (backslash for fish, `!` and newlines for csh/tcsh,
  non-ASCII), as octal escapes that /bin/sh's printf decodes: fish, tcsh and csh accounts run exactly the
  argv that bash ones do. Variables travel inside the script because the Macs' sshd drops requested
  environment; `secret_env` values travel on stdin (read by the script before the command starts), never
  on a command line. One paramiko connection per node is reused for every command (lazy connect, one
  reconnect when the transport died). Every wait is bounded: TCP connect, banner, key exchange and auth by
  `connect_timeout`; the channel open, the exec request and every read by the command's own timeout.
- Host keys are checked against every known_hosts file that applies (the explicit file, ssh_config's
  UserKnownHostsFile and GlobalKnownHostsFile, else /etc/ssh/ssh_known_hosts{,2}); a new host is accepted
  only with `accept_new_host_keys=True` and only when no file pins any key for it (the key is then
  appended to the first user file). Targets are `user@host[:port]`, `user@[v6addr][:port]` or an alias.
- `secrets` (and `secret_env` values) are replaced by `***` in the transcript, the returned result and
  every error message.
- `run_probe(name, args)` sends `modeldrop/probes/<name>.py` to the node's python on stdin (one round trip)
  and returns the JSON object it printed; the interpreter is picked once per node by `probes.PYTHON_PICK`
  unless `python_cmd` is given. A long probe is registered for cleanup while it runs, and runs under node-side
  limits (`probes/_watch.py`): it ends by itself NODE_SLACK_S after its timeout or at its first heartbeat after
  the controller's connection is gone, and a small record of it (pid, start, run id, what) sits in the node
  user's `~/.modeldrop/running/` while it runs (the rule is in `run_probe`'s docstring).
- `supervise(argv, ...)` runs a long command (`hf download`) the same way, under the `supervise` probe: streamed
  like `stream`, registered, recorded and limited on the node like a long probe, and stopped on the node when
  nothing grows under `stall_dir` for `stall_s`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modeldrop import probes
from modeldrop.cleanup import REGISTRY, RemoteProcess, parse_pid_line
from modeldrop.errors import CommandTimeout, NodeError
from modeldrop.redaction import redact

LineCallback = Callable[[str, str], None]
TAIL_CHARS = 2000
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOGIN_SHELL_SAFE = re.compile(r"[ -~]*")  # printable ASCII; backslash and `!` are checked apart
LONG_PROBE_S = 60.0  # a probe allowed more than this is registered for cleanup while it runs (see run_probe)
NODE_SLACK_S = 15.0  # a watched command's node-side limit is its timeout plus this (the controller's stop comes first)


@dataclass
class Supervised:
    """What a supervised command did: its own rc, how it ended ("exited", "stalled", "not-started", "stopped":
    the probe ended without a result), output (redacted, heartbeats removed), wall time, and for a stall the
    files that changed last and how long nothing grew."""

    rc: int
    ended: str
    stdout: str
    stderr: str
    duration_s: float
    last_files: list[str] = field(default_factory=list)
    still_s: float | None = None


@dataclass
class CommandResult:
    """What a command did: argv (secrets redacted), exit status, decoded output, wall time."""

    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.rc == 0


def tail(text: str, n: int = TAIL_CHARS) -> str:
    """The last n characters of text, marked when cut."""
    return text if len(text) <= n else "…" + text[-n:]


class _Lines:
    """Accumulates one output stream and hands complete lines to on_line as they arrive."""

    def __init__(self, name: str, on_line: LineCallback | None):
        self.name, self.on_line = name, on_line
        self.chunks: list[bytes] = []
        self._pending: list[bytes] = []  # an unfinished line, in pieces (a long line stays linear)

    def feed(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.on_line is None:
            return
        if b"\n" not in data:
            self._pending.append(data)
            return
        lines = data.split(b"\n")
        lines[0] = b"".join([*self._pending, lines[0]])
        self._pending = [lines.pop()]
        for line in lines:
            self._call(line.decode("utf-8", "replace").rstrip("\r"))

    def _call(self, line: str) -> None:
        """Hand a line to on_line (not a watched probe's heartbeat); a failing callback must not stop the draining
        (the command would stall)."""
        if line == probes.ALIVE:
            return
        try:
            self.on_line(self.name, line)
        except Exception:  # noqa: BLE001
            pass

    def finish(self) -> str:
        rest = b"".join(self._pending)
        if self.on_line is not None and rest:
            self._call(rest.decode("utf-8", "replace"))
        self._pending = []
        return b"".join(self.chunks).decode("utf-8", "replace")


@dataclass
class _Exec:
    """One command as the transport layer sees it: shell text (SSH) or argv (local), plus display argv."""

    display: list[str]
    argv: list[str] | None = None
    shell_text: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    unset_env: Sequence[str] = ()
    secret_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, argv: Sequence[str], env: Mapping[str, str] | None, unset_env: Sequence[str],
           secret_env: Mapping[str, str] | None = None) -> _Exec:
        """An argv command with its environment changes (secret_env travels on stdin over SSH)."""
        args = [str(a) for a in argv]
        for name in [*(env or {}), *unset_env, *(secret_env or {})]:
            if not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
        for name, value in (secret_env or {}).items():
            if "\n" in value or "\r" in value:
                raise NodeError(f"{name} contains a line break; it cannot be passed to a node")
        return cls(display=args, argv=args, env=dict(env or {}), unset_env=tuple(unset_env),
                   secret_env=dict(secret_env or {}))

    def sh_script(self) -> str:
        """The /bin/sh script that runs this command: unset, read secrets from stdin, export, exec."""
        parts = [f"unset {' '.join(self.unset_env)}"] if self.unset_env else []
        parts += [f"IFS= read -r {n} || exit 125; export {n}" for n in self.secret_env]
        if self.env:
            parts.append("export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in self.env.items()))
        parts.append(self.shell_text if self.shell_text is not None else "exec " + shlex.join(self.argv or []))
        return "; ".join(parts)

    def stdin_prefix(self) -> bytes:
        """The secret values, one line each, sent before any stdin of the command itself."""
        return "".join(f"{v}\n" for v in self.secret_env.values()).encode()


def login_shell_text(script: str) -> str:
    """Text sshd hands to the account's login shell (bash, zsh, fish, tcsh, csh...) that runs `script` with
    /bin/sh: single-quoted when no login shell can read anything into it, else as printf octal escapes."""
    if _LOGIN_SHELL_SAFE.fullmatch(script) and "\\" not in script and "!" not in script:
        return "/bin/sh -c " + shlex.quote(script)
    octal = "".join(f"\\{b:03o}" for b in script.encode())
    return "/bin/sh -c 'eval \"$(printf \"" + octal + "\")\"'"


class Node(ABC):
    """A cluster node that runs argv commands and stdlib probes; see the module docstring for the contract."""

    name: str
    target: str
    run_id: str | None = None  # the run a node-side record of long work names (set by the NodePool)

    def __init__(self, name: str, target: str, *, python_cmd: str | None = None):
        self.name, self.target = name, target
        self.python_cmd = python_cmd
        self._picked_python: str | None = None
        self._facts: dict | None = None
        self.transcript: list[dict] = []
        self._lock = threading.Lock()

    # -- transport-specific -------------------------------------------------------------------------
    @abstractmethod
    def _execute(self, cmd: _Exec, *, timeout: float, stdin: bytes | None,
                 on_line: LineCallback | None) -> tuple[int, str, str]:
        """Run one command; return (rc, stdout, stderr) or raise CommandTimeout/NodeError (unredacted)."""

    @abstractmethod
    def address(self) -> str:
        """The IP of this node as seen from the control host."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (a later command reconnects)."""

    # -- public API ---------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
            unset_env: Sequence[str] = (), stdin: bytes | None = None, secrets: Sequence[str] = (),
            secret_env: Mapping[str, str] | None = None) -> CommandResult:
        """Run argv on the node; the result's rc may be non-zero. Raises CommandTimeout / NodeError."""
        cmd = _Exec.of(argv, env, unset_env, secret_env)
        secrets = [*secrets, *cmd.secret_env.values()]
        return self._run_logged(cmd, timeout=timeout, stdin=stdin, secrets=secrets, on_line=None)

    def stream(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
               unset_env: Sequence[str] = (), on_line: LineCallback, secrets: Sequence[str] = (),
               secret_env: Mapping[str, str] | None = None) -> CommandResult:
        """Like run, calling on_line(stream_name, line) for each stdout/stderr line as it arrives."""
        cmd = _Exec.of(argv, env, unset_env, secret_env)
        secrets = [*secrets, *cmd.secret_env.values()]

        def redacted(stream_name: str, line: str) -> None:
            on_line(stream_name, redact(line, secrets))

        return self._run_logged(cmd, timeout=timeout, stdin=None, secrets=secrets, on_line=redacted)

    def run_probe(self, name: str, args: dict, *, timeout: float = 60, register: bool | None = None,
                  progress: Callable[[dict], None] | None = None) -> dict:
        """Run probe `name` with args on the node's python and return its JSON result; NodeError on failure.

        Cleanup rule: closing the connection does not stop a probe's python, so a probe is registered in
        `cleanup.REGISTRY` while it runs when `register` is True, or when it is None, `timeout` exceeds
        LONG_PROBE_S (manifest, hashes, locate, tool runs, spawn: node-side work that can outlast a gate's
        limit or a Ctrl-C by minutes) and the probe is not `stop` (bounded node-side by its own grace, and
        itself the cleanup: cut short, it would leave its target without the SIGKILL). The registration is made
        before the command starts and holds the `probes.probe_argv_tags` words of its command line (with a
        fresh nonce) and, once the python reports it first thing, its pid; it ends when the probe returns, or
        on a connection error before any pid was reported. When the wait times out, or a gate's limit or a
        deadline cuts it short, the probe is stopped at once (the timeout's message says how); on Ctrl-C or
        SIGTERM, or a lost connection, it stays registered for the session's drain. A registered probe also runs
        under node-side limits (`probes.watch_spec`: timeout + NODE_SLACK_S, or its controller gone).
        `progress(fields)` gets each progress line the probe says on stderr (`probes.parse_progress`) as it comes."""
        nonce = probes.new_nonce()
        cmd = self._python_exec(name, args, nonce)
        long_probe = register if register is not None else timeout > LONG_PROBE_S and name != "stop"
        watch = _ProbeWatch(self, name, nonce) if long_probe else None
        if long_probe:
            args = {**args, "_watch": probes.watch_spec(timeout + NODE_SLACK_S, f"probe {name}", self.run_id)}
        res = self._run_watched(cmd, probes.probe_payload(name, args), timeout, watch,
                                _progress_lines(watch, progress) if progress is not None else None)
        stderr = self._probe_stderr(res)
        result = probes.parse_result(res.stdout) if res.rc == 0 else None
        if result is None:
            raise NodeError(f"{self.name} ({self.target}): probe {name} failed (rc {res.rc}): "
                            f"{_last_lines(stderr or res.stdout)}")
        return result

    def supervise(self, argv: Sequence[str], *, timeout: float, what: str, env: Mapping[str, str] | None = None,
                  unset_env: Sequence[str] = (), secret_env: Mapping[str, str] | None = None,
                  secrets: Sequence[str] = (), on_line: LineCallback | None = None, stall_dir: str | None = None,
                  stall_s: float = 0.0) -> Supervised:
        """Run argv on the node under the `supervise` probe (see the module docstring): on_line gets its output
        lines as they come; CommandTimeout after `timeout` (the command stopped first, as for a long probe);
        NodeError when the node cannot be reached."""
        nonce = probes.new_nonce()
        args = {"argv": [str(a) for a in argv], "stall_dir": stall_dir, "stall_s": stall_s}
        cmd = self._python_exec("supervise", args, nonce, env=env, unset_env=unset_env, secret_env=secret_env)
        watch = _ProbeWatch(self, "supervise", nonce, what)
        args["_watch"] = probes.watch_spec(timeout + NODE_SLACK_S, what, self.run_id)
        secrets = [*secrets, *(secret_env or {}).values()]

        def lines(stream_name: str, line: str) -> None:
            watch(stream_name, line)
            if on_line is not None and parse_pid_line(line) is None and not line.startswith(probes.PICKED_MARKER) \
                    and not line.startswith(probes.RESULT_MARKER):
                on_line(stream_name, redact(line, secrets))

        res = self._run_watched(cmd, probes.probe_payload("supervise", args), timeout, watch, lines, secrets)
        stderr = self._probe_stderr(res)
        result = probes.parse_result(res.stdout) or {}
        stdout = "".join(ln for ln in res.stdout.splitlines(keepends=True) if not ln.startswith(probes.RESULT_MARKER))
        return Supervised(int(result.get("rc", res.rc)), str(result.get("ended") or "stopped"), stdout, stderr,
                          res.duration_s, list(result.get("last_files") or []), result.get("still_s"))

    def facts(self, *, refresh: bool = False, timeout: float = 30) -> dict:
        """The `facts` probe result, cached per node (probed again with refresh=True)."""
        if self._facts is None or refresh:
            self._facts = self.run_probe("facts", {}, timeout=timeout)
        return self._facts

    def read_tail(self, path: str, max_bytes: int = 65536) -> str:
        """The last max_bytes of a file on the node ('' when it does not exist)."""
        r = self.run_probe("tail", {"path": path, "max_bytes": max_bytes}, timeout=60)
        return str(r.get("text") or "") if r.get("exists") else ""

    def expand_path(self, path: str) -> str:
        """path with a leading `~` replaced by the node's home (from the cached facts)."""
        if path == "~" or path.startswith("~/"):
            return self.facts()["home"] + path[1:]
        return path

    # -- internals ----------------------------------------------------------------------------------
    def _probe_stderr(self, res: CommandResult) -> str:
        """A probe's stderr without the python pick and pid lines (the pick cached); NodeError when the node has
        no python at all."""
        picked, stderr = probes.parse_picked(res.stderr)
        stderr = "".join(ln for ln in stderr.splitlines(keepends=True)
                         if parse_pid_line(ln) is None and not ln.startswith(probes.PROGRESS_TAG))
        if picked and self.python_cmd is None:
            self._picked_python = picked
        if res.rc == probes.NO_PYTHON_RC and "NO_PYTHON" in stderr:
            raise NodeError(f"{self.name} ({self.target}): no usable python3 (tried /opt/homebrew/bin/python3, "
                            "/usr/local/bin/python3, $(xcode-select -p)/usr/bin/python3, /usr/bin/python3); "
                            "install Command Line Tools or Homebrew python, or set the node's python_cmd")
        return stderr

    def _python_exec(self, probe_name: str, args: dict, nonce: str, *, env: Mapping[str, str] | None = None,
                     unset_env: Sequence[str] = (), secret_env: Mapping[str, str] | None = None) -> _Exec:
        """The command that feeds a probe to the node's python (the pick snippet until one is known), its
        command line marked by `probes.probe_argv_tags`, with environment changes for the probe's python."""
        py = self.python_cmd or self._picked_python
        shown = json.dumps({k: v for k, v in args.items() if k not in ("env", "_watch")}, sort_keys=True)
        display = ["<probe>", probe_name, f"({py or 'python3 pick'})", shown[:300]]
        tags = probes.probe_argv_tags(probe_name, nonce)
        base = _Exec.of(["true"], env, unset_env, secret_env)  # validates the names and the secrets
        extra = {"env": base.env, "unset_env": base.unset_env, "secret_env": base.secret_env}
        if py:
            text = "exec " + shlex.join([py, "-", *tags])
            if py.startswith("~/"):  # a configured ~/… interpreter: let the node's shell supply $HOME
                text = 'exec "$HOME"/' + shlex.join([py[2:], "-", *tags])
            return _Exec(display=display, argv=[os.path.expanduser(py), "-", *tags], shell_text=text, **extra)
        pick = ["/bin/sh", "-c", probes.PYTHON_PICK, "sh", *tags]  # the SSH script is run by /bin/sh already
        return _Exec(display=display, argv=pick, shell_text=f"set -- {shlex.join(tags)}; {probes.PYTHON_PICK}",
                     **extra)

    def _run_watched(self, cmd: _Exec, payload: bytes, timeout: float, watch: _ProbeWatch | None,
                     on_line: LineCallback | None = None, secrets: Sequence[str] = ()) -> CommandResult:
        """Run a probe's command; a watched one is done, stopped or left registered as `run_probe` says."""
        if watch is None:
            return self._run_logged(cmd, timeout=timeout, stdin=payload, secrets=secrets, on_line=on_line)
        try:
            res = self._run_logged(cmd, timeout=timeout, stdin=payload, secrets=secrets, on_line=on_line or watch)
        except CommandTimeout as exc:
            stopped = REGISTRY.stop_one(watch.token) or f"{watch.what}: not registered"
            raise CommandTimeout(f"{exc}; {stopped}", exc.partial) from None
        except NodeError:
            if watch.pid is None:  # the command never got as far as the probe's python: nothing to stop
                REGISTRY.done(watch.token)
            raise  # a lost connection: the session's drain stops it
        except (KeyboardInterrupt, SystemExit):
            raise  # the session's drain stops it (a second Ctrl-C must not cut a stop short here)
        except BaseException:  # a gate's limit or a deadline: nobody will read the result
            REGISTRY.stop_one(watch.token)
            raise
        REGISTRY.done(watch.token)
        return res

    def _run_logged(self, cmd: _Exec, *, timeout: float, stdin: bytes | None, secrets: Sequence[str],
                    on_line: LineCallback | None) -> CommandResult:
        shown = [redact(a, secrets) for a in cmd.display]
        env_shown = [f"{k}={redact(v, secrets)}" for k, v in cmd.env.items()] + [f"{k}=***" for k in cmd.secret_env]
        entry: dict[str, Any] = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                                 "node": self.name, "argv": shown, "env": env_shown, "rc": None,
                                 "duration_s": None}
        t0 = time.monotonic()
        try:
            rc, out, err = self._execute(cmd, timeout=timeout, stdin=stdin, on_line=on_line)
        except CommandTimeout as exc:
            entry.update(rc="timeout", duration_s=round(time.monotonic() - t0, 3))
            self._record(entry)
            raise CommandTimeout(redact(str(exc), secrets), redact(probes.strip_alive(exc.partial), secrets)) from None
        except NodeError as exc:
            entry.update(rc="error", duration_s=round(time.monotonic() - t0, 3), error=redact(str(exc), secrets))
            self._record(entry)
            raise NodeError(redact(str(exc), secrets)) from None
        duration = time.monotonic() - t0
        entry.update(rc=rc, duration_s=round(duration, 3))
        self._record(entry)
        return CommandResult(shown, rc, redact(out, secrets), redact(probes.strip_alive(err), secrets), duration)

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.transcript.append(entry)

    def _timeout_error(self, cmd: _Exec, timeout: float, out: str, err: str) -> CommandTimeout:
        partial = (out[-TAIL_CHARS:] + ("\n[stderr]\n" + err[-TAIL_CHARS:] if err else "")).strip()
        return CommandTimeout(f"{self.name} ({self.target}): `{shlex.join(cmd.display)}` timed out after "
                              f"{timeout:g}s", partial)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.target!r})"


class _ProbeWatch:
    """A long probe's registration for cleanup, made before it starts (found by its nonce until it reports its
    pid), and the stderr watcher that fills the pid in."""

    def __init__(self, node: Node, name: str, nonce: str, what: str | None = None):
        self.what = what or f"probe {name}"
        needles = tuple(probes.probe_argv_tags(name, nonce))
        self.token = REGISTRY.register(RemoteProcess(node, None, self.what, needles))
        self.pid: int | None = None

    def __call__(self, stream: str, line: str) -> None:
        pid = parse_pid_line(line) if stream == "stderr" and self.pid is None else None
        if pid is not None:
            self.pid = pid
            REGISTRY.identified(self.token, pid)


def _progress_lines(watch: _ProbeWatch | None, progress: Callable[[dict], None]) -> LineCallback:
    """A probe's stderr watcher that also hands its progress lines to `progress`."""
    def on_line(stream: str, line: str) -> None:
        if watch is not None:
            watch(stream, line)
        fields = probes.parse_progress(line) if stream == "stderr" else None
        if fields is not None:
            progress(fields)
    return on_line


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


# ---------------------------------------------------------------------------------------------------
class LocalNode(Node):
    """The control host itself: argv run with subprocess (no shell), env merged into os.environ."""

    def __init__(self, name: str, target: str = "local", *, python_cmd: str | None = None):
        super().__init__(name, target, python_cmd=python_cmd)

    def address(self) -> str:
        return "127.0.0.1"

    def close(self) -> None:
        """Nothing to release: every command is its own process."""

    def _execute(self, cmd: _Exec, *, timeout: float, stdin: bytes | None,
                 on_line: LineCallback | None) -> tuple[int, str, str]:
        env = dict(os.environ)
        for name in cmd.unset_env:
            env.pop(name, None)
        env.update(cmd.env)
        env.update(cmd.secret_env)
        try:
            proc = subprocess.Popen(cmd.argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    start_new_session=True)
        except OSError as exc:
            return 127, "", f"{cmd.argv[0]}: {exc.strerror or exc}\n"
        streams = {"stdout": _Lines("stdout", on_line), "stderr": _Lines("stderr", on_line)}
        readers = [threading.Thread(target=_pump, args=(getattr(proc, k), streams[k]), daemon=True)
                   for k in streams]
        for t in readers:
            t.start()
        if stdin is not None:
            threading.Thread(target=_feed_stdin, args=(proc.stdin, stdin), daemon=True).start()
        deadline = time.monotonic() + timeout
        try:
            proc.wait(timeout=timeout)
            for t in readers:  # a background child of the command may hold its pipes open: bounded too
                t.join(max(0.0, deadline - time.monotonic()))
            done = not any(t.is_alive() for t in readers)
        except subprocess.TimeoutExpired:
            done = False
        if not done:
            _kill_group(proc)  # the session we started: the command and whatever it left in it
            for t in readers:
                t.join(2)
            raise self._timeout_error(cmd, timeout, streams["stdout"].finish(), streams["stderr"].finish())
        return proc.returncode, streams["stdout"].finish(), streams["stderr"].finish()


def _pump(pipe, lines: _Lines) -> None:
    """Copy a pipe into a _Lines until EOF."""
    with pipe:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            lines.feed(chunk)


def _feed_stdin(pipe, data: bytes) -> None:
    try:
        with pipe:
            pipe.write(data)
    except (BrokenPipeError, OSError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of a command we started (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def url_host(address: str) -> str:
    """An address as it goes into a URL: IPv6 in brackets."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address

"""Nodes: run commands and probes on a cluster node, over SSH (paramiko) or locally.

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
- `run_probe(name, args)` sends `modeldrop/probes/<name>.py` to the node's python on stdin (one round trip,
  nothing written on the node) and returns the JSON object it printed; the interpreter is picked once per
  node by `probes.PYTHON_PICK` unless `python_cmd` is given.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko

from modeldrop import probes
from modeldrop.errors import CommandTimeout, NodeError
from modeldrop.redaction import redact

LineCallback = Callable[[str, str], None]
TAIL_CHARS = 2000
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOGIN_SHELL_SAFE = re.compile(r"[ -~]*")  # printable ASCII; backslash and `!` are checked apart
NO_STATUS_NOTE = ("\n[modeldrop] the SSH channel closed without an exit status: the command was killed by a "
                  "signal, or the node's sshd / the connection went away\n")


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
        self._pending = b""

    def feed(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.on_line is None:
            return
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._call(line.decode("utf-8", "replace").rstrip("\r"))

    def _call(self, line: str) -> None:
        """Hand a line to on_line; a failing callback must not stop the draining (the command would stall)."""
        try:
            self.on_line(self.name, line)
        except Exception:  # noqa: BLE001
            pass

    def finish(self) -> str:
        if self.on_line is not None and self._pending:
            self._call(self._pending.decode("utf-8", "replace"))
            self._pending = b""
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

    def run_probe(self, name: str, args: dict, *, timeout: float = 60) -> dict:
        """Run probe `name` with args on the node's python and return its JSON result; NodeError on failure."""
        payload = probes.probe_payload(name, args)
        cmd = self._python_exec(name, args)
        res = self._run_logged(cmd, timeout=timeout, stdin=payload, secrets=(), on_line=None)
        picked, stderr = probes.parse_picked(res.stderr)
        if picked and self.python_cmd is None:
            self._picked_python = picked
        if res.rc == probes.NO_PYTHON_RC and "NO_PYTHON" in stderr:
            raise NodeError(f"{self.name} ({self.target}): no usable python3 (tried /opt/homebrew/bin/python3, "
                            "/usr/local/bin/python3, $(xcode-select -p)/usr/bin/python3, /usr/bin/python3); "
                            "install Command Line Tools or Homebrew python, or set the node's python_cmd")
        result = probes.parse_result(res.stdout) if res.rc == 0 else None
        if result is None:
            raise NodeError(f"{self.name} ({self.target}): probe {name} failed (rc {res.rc}): "
                            f"{_last_lines(stderr or res.stdout)}")
        return result

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
    def _python_exec(self, probe_name: str, args: dict) -> _Exec:
        """The command that feeds a probe to the node's python (the pick snippet until one is known)."""
        py = self.python_cmd or self._picked_python
        shown = json.dumps({k: v for k, v in args.items() if k != "env"}, sort_keys=True)
        display = ["<probe>", probe_name, f"({py or 'python3 pick'})", shown[:300]]
        if py:
            text = "exec " + shlex.join([py, "-"])
            if py.startswith("~/"):  # a configured ~/… interpreter: let the node's shell supply $HOME
                text = 'exec "$HOME"/' + shlex.join([py[2:], "-"])
            return _Exec(display=display, argv=[os.path.expanduser(py), "-"], shell_text=text)
        pick = ["/bin/sh", "-c", probes.PYTHON_PICK]  # the SSH script is run by /bin/sh already
        return _Exec(display=display, argv=pick, shell_text=probes.PYTHON_PICK)

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
            raise CommandTimeout(redact(str(exc), secrets), redact(exc.partial, secrets)) from None
        except NodeError as exc:
            entry.update(rc="error", duration_s=round(time.monotonic() - t0, 3), error=redact(str(exc), secrets))
            self._record(entry)
            raise NodeError(redact(str(exc), secrets)) from None
        duration = time.monotonic() - t0
        entry.update(rc=rc, duration_s=round(duration, 3))
        self._record(entry)
        return CommandResult(shown, rc, redact(out, secrets), redact(err, secrets), duration)

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.transcript.append(entry)

    def _timeout_error(self, cmd: _Exec, timeout: float, out: str, err: str) -> CommandTimeout:
        partial = (out[-TAIL_CHARS:] + ("\n[stderr]\n" + err[-TAIL_CHARS:] if err else "")).strip()
        return CommandTimeout(f"{self.name} ({self.target}): `{shlex.join(cmd.display)}` timed out after "
                              f"{timeout:g}s", partial)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.target!r})"


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
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            for t in readers:
                t.join(2)
            raise self._timeout_error(cmd, timeout, streams["stdout"].finish(), streams["stderr"].finish()) from None
        for t in readers:
            t.join()
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


# ---------------------------------------------------------------------------------------------------
class HostKeyUnknown(NodeError):
    """The node's host key is not in known_hosts and accepting new keys was not asked for."""


class HostKeyPinned(NodeError):
    """The node presents a key of a type no file pins, while some known_hosts file pins another key for it."""


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Accept a host no known_hosts file knows (never a changed key, never a new key type for a pinned host)
    and append its key to the user known_hosts file."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        pinned = {**(client.get_host_keys().lookup(hostname) or {}),
                  **(client._system_host_keys.lookup(hostname) or {})}  # noqa: SLF001 - paramiko keeps them apart
        if pinned:
            raise HostKeyPinned(f"{hostname} presents {key.get_name()} {key.fingerprint}, but known_hosts pins "
                                f"{', '.join(sorted(pinned))} for it")
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a", encoding="utf-8") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class _RejectPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key, remembering it so the error can name its fingerprint."""

    def missing_host_key(self, client, hostname, key):
        raise HostKeyUnknown(f"{hostname} {key.get_name()} {key.fingerprint}")


@dataclass
class SSHTarget:
    """Where and how to connect, after ssh_config resolution."""

    hostname: str
    port: int
    user: str | None
    identity_files: list[str]
    known_hosts: Path
    proxy_command: str | None
    user_known_hosts: list[Path] = field(default_factory=list)
    global_known_hosts: list[Path] = field(default_factory=list)


def _config_text(path: Path, depth: int = 0) -> str:
    """ssh_config text with `Include` lines inlined (paramiko's parser ignores them); relative paths are
    taken from ~/.ssh as OpenSSH does; globs expand in sorted order."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        words = line.strip().split(None, 1)
        if depth < 8 and len(words) == 2 and words[0].lower() == "include":
            for pattern in shlex.split(words[1]):
                pattern = os.path.expanduser(pattern)
                if not os.path.isabs(pattern):
                    pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
                for inc in sorted(glob.glob(pattern)):
                    if os.path.isfile(inc):
                        out.append(_config_text(Path(inc), depth + 1))
            continue
        out.append(line)
    return "\n".join(out)


def split_host_port(hostport: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6addr]` or `[v6addr]:port` -> (host without brackets, port or None)."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if hostport.count(":") == 1:
        host, p = hostport.split(":")
        return host, int(p) if p.isdigit() else None
    return hostport, None


def _paths(value: str | None) -> list[Path]:
    """The files an ssh_config *KnownHostsFile value names (several, space-separated; `none` for none)."""
    words = shlex.split(value) if value else []
    return [Path(os.path.expanduser(w)) for w in words if w.lower() != "none"]


def resolve_target(target: str, ssh_config: Path | None, known_hosts: Path | None) -> SSHTarget:
    """Parse `user@host[:port]`, `user@[v6addr][:port]` or an alias and apply ssh_config (HostName, User,
    Port, IdentityFile, UserKnownHostsFile, GlobalKnownHostsFile, ProxyCommand/ProxyJump)."""
    user, _, hostport = target.rpartition("@")
    host, port = split_host_port(hostport)
    cfg_path = ssh_config if ssh_config is not None else Path("~/.ssh/config").expanduser()
    opts: dict[str, Any] = {}
    if cfg_path.is_file():
        opts = paramiko.SSHConfig.from_text(_config_text(cfg_path)).lookup(host)
    user_files = ([Path(known_hosts)] if known_hosts is not None else []) + _paths(opts.get("userknownhostsfile"))
    kh = user_files[0] if user_files else None
    global_files = (_paths(opts["globalknownhostsfile"]) if "globalknownhostsfile" in opts
                    else [Path(p) for p in GLOBAL_KNOWN_HOSTS])
    hostname, port = opts.get("hostname", host), port or int(opts.get("port", 22))
    proxy = opts.get("proxycommand")
    if not proxy and opts.get("proxyjump") and opts["proxyjump"].lower() != "none":
        jump = opts["proxyjump"].split(",")[0]
        proxy = shlex.join(["ssh", *(["-F", str(cfg_path)] if cfg_path.is_file() else []), "-W",
                            f"{hostname}:{port}", jump])
    return SSHTarget(hostname=hostname, port=port, user=user or opts.get("user") or None,
                     identity_files=[os.path.expanduser(p) for p in opts.get("identityfile", [])],
                     known_hosts=kh or Path("~/.ssh/known_hosts").expanduser(), proxy_command=proxy,
                     user_known_hosts=user_files or [Path("~/.ssh/known_hosts").expanduser()],
                     global_known_hosts=global_files)


class SSHNode(Node):
    """A node reached over SSH with paramiko: one connection reused for every command."""

    def __init__(self, name: str, target: str, *, ssh_config: Path | None = None, known_hosts: Path | None = None,
                 accept_new_host_keys: bool = False, connect_timeout: float = 10, keepalive_s: int = 15,
                 python_cmd: str | None = None):
        super().__init__(name, target, python_cmd=python_cmd)
        self.ssh_config = Path(ssh_config) if ssh_config else None
        self.known_hosts = Path(known_hosts) if known_hosts else None
        self.accept_new_host_keys = accept_new_host_keys
        self.connect_timeout = connect_timeout
        self.keepalive_s = keepalive_s
        self._client: paramiko.SSHClient | None = None
        self._conn_lock = threading.Lock()
        self._resolved: SSHTarget | None = None

    @property
    def resolved(self) -> SSHTarget:
        """The ssh_config-resolved target (computed once)."""
        if self._resolved is None:
            self._resolved = resolve_target(self.target, self.ssh_config, self.known_hosts)
        return self._resolved

    def address(self) -> str:
        host = self.resolved.hostname
        try:
            return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
        except socket.gaierror as exc:
            raise NodeError(f"{self.name} ({self.target}): cannot resolve {host}: {exc}") from None

    def transport(self) -> paramiko.Transport:
        """The live transport, connecting (or reconnecting once) as needed."""
        with self._conn_lock:
            t = self._client.get_transport() if self._client else None
            if t is None or not t.is_active():
                self._connect()
                t = self._client.get_transport()
            return t

    def close(self) -> None:
        with self._conn_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _connect(self) -> None:
        r = self.resolved
        if self._client is not None:
            self._client.close()
        client = paramiko.SSHClient()
        _load_known_hosts(client, r)
        client.set_missing_host_key_policy(_AcceptNewPolicy(r.known_hosts) if self.accept_new_host_keys
                                           else _RejectPolicy())
        where = f"{self.name} ({self.target} -> {r.user + '@' if r.user else ''}{r.hostname}:{r.port})"
        try:
            client.connect(r.hostname, port=r.port, username=r.user, key_filename=r.identity_files or None,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, allow_agent=True, look_for_keys=not r.identity_files,
                           sock=paramiko.ProxyCommand(r.proxy_command) if r.proxy_command else None)
        except HostKeyUnknown as exc:
            client.close()
            raise NodeError(f"{where}: host key not in {r.known_hosts} (key {exc}); check it, then rerun with "
                            "--accept-new-host-keys to record it") from None
        except HostKeyPinned as exc:
            client.close()
            raise NodeError(f"{where}: host key refused: {exc} (in {', '.join(map(str, _kh_files(r)))}); "
                            "--accept-new-host-keys never overrides a pinned key") from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise NodeError(f"{where}: host key CHANGED ({exc.key.get_name()} {exc.key.fingerprint}, known_hosts "
                            f"({', '.join(map(str, _kh_files(r)))}) has {exc.expected_key.fingerprint}); if the node was reinstalled, "
                            f"remove the old line with ssh-keygen -R and rerun with --accept-new-host-keys") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise NodeError(f"{where}: authentication failed ({exc}); identity files: "
                            f"{', '.join(r.identity_files) or 'default keys/agent'}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            cause = str(exc).strip() or type(exc).__name__
            raise NodeError(f"{where}: cannot connect: {cause}") from None
        transport = client.get_transport()
        transport.set_keepalive(self.keepalive_s)
        if isinstance(transport.sock, socket.socket):  # small channel requests must not wait on Nagle
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client

    def _command_text(self, cmd: _Exec) -> str:
        """What sshd hands to the login shell: /bin/sh running the command's script (see module doc)."""
        return login_shell_text(cmd.sh_script())

    def _exec_request(self, chan: paramiko.Channel, cmd: _Exec, deadline: float, timeout: float) -> None:
        """Send the exec request, waiting for sshd's answer no longer than the command's deadline (paramiko
        waits forever); a session that never answers drops the connection, which ends the waiting thread."""
        failed: list[BaseException] = []

        def request() -> None:
            try:
                chan.exec_command(self._command_text(cmd))
            except (paramiko.SSHException, EOFError, OSError) as exc:
                failed.append(exc)

        waiter = threading.Thread(target=request, name=f"exec-{self.name}", daemon=True)
        waiter.start()
        waiter.join(max(0.0, deadline - time.monotonic()))
        if waiter.is_alive():
            self.close()
            raise CommandTimeout(f"{self.name} ({self.target}): `{shlex.join(cmd.display)}` timed out after "
                                 f"{timeout:g}s: sshd accepted the session but never answered the exec request")
        if failed:
            raise NodeError(f"{self.name} ({self.target}): cannot start `{shlex.join(cmd.display)}`: "
                            f"{failed[0]}")

    def _open_channel(self) -> paramiko.Channel:
        """A new session channel on the shared transport; reconnect once when the transport died."""
        for attempt in (1, 2):
            t = self.transport()
            try:
                return t.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt == 2 or (t.is_active() and isinstance(exc, paramiko.ChannelException)):
                    # a live connection that refuses a channel (e.g. sshd MaxSessions): do not drop it
                    raise NodeError(f"{self.name} ({self.target}): cannot open a channel: {exc}") from None
                self.close()
        raise AssertionError("unreachable")

    def _execute(self, cmd: _Exec, *, timeout: float, stdin: bytes | None,
                 on_line: LineCallback | None) -> tuple[int, str, str]:
        deadline = time.monotonic() + timeout
        chan = self._open_channel()
        try:
            chan.settimeout(min(max(timeout, 0.1), 30.0))
            self._exec_request(chan, cmd, deadline, timeout)
            streams = {"stdout": _Lines("stdout", on_line), "stderr": _Lines("stderr", on_line)}
            readers = [threading.Thread(target=_drain, args=(chan.recv, streams["stdout"]), daemon=True),
                       threading.Thread(target=_drain, args=(chan.recv_stderr, streams["stderr"]), daemon=True)]
            for t in readers:
                t.start()
            feed = cmd.stdin_prefix() + (stdin or b"")
            if feed or stdin is not None:
                threading.Thread(target=_send_stdin, args=(chan, feed), daemon=True).start()
            else:
                chan.shutdown_write()
            for t in readers:
                t.join(max(0.0, deadline - time.monotonic()))
            if any(t.is_alive() for t in readers) or not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                chan.close()
                for t in readers:
                    t.join(2)
                raise self._timeout_error(cmd, timeout, streams["stdout"].finish(), streams["stderr"].finish())
            rc, err = chan.recv_exit_status(), streams["stderr"].finish()
            if rc == -1:  # paramiko's "no exit-status": sshd sent exit-signal or the session died
                err += NO_STATUS_NOTE
            return rc, streams["stdout"].finish(), err
        finally:
            chan.close()


def _kh_files(r: SSHTarget) -> list[Path]:
    """Every known_hosts file that applies to the target (user files first)."""
    return [*r.user_known_hosts, *r.global_known_hosts]


def _load_known_hosts(client: paramiko.SSHClient, r: SSHTarget) -> None:
    """Load the user files into the client's host keys (the first is where accept-new appends) and the global
    ones into its system keys; unreadable or missing files are skipped."""
    for path, load in [*((p, client.get_host_keys().load) for p in r.user_known_hosts),
                       *((p, client.load_system_host_keys) for p in r.global_known_hosts)]:
        try:
            if path.is_file():
                load(str(path))
        except (OSError, paramiko.SSHException):
            continue


def _drain(recv: Callable[[int], bytes], lines: _Lines) -> None:
    """Read one channel stream until EOF/close; channel timeouts just loop (the caller owns the deadline)."""
    while True:
        try:
            data = recv(65536)
        except TimeoutError:
            continue
        except (OSError, EOFError):
            return
        if not data:
            return
        lines.feed(data)


def _send_stdin(chan: paramiko.Channel, data: bytes) -> None:
    try:
        chan.sendall(data)
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass


def url_host(address: str) -> str:
    """An address as it goes into a URL: IPv6 in brackets."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def make_node(name: str, target: str, **ssh_options: Any) -> Node:
    """LocalNode for target 'local' (only python_cmd is used from the options), else SSHNode."""
    if target == "local":
        return LocalNode(name, python_cmd=ssh_options.get("python_cmd"))
    return SSHNode(name, target, **ssh_options)

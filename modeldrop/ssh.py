"""SSH nodes: `SSHNode` (paramiko) and how a target becomes a connection.

Contract:
- Targets are `user@host[:port]`, `user@[v6addr][:port]` or an ssh_config alias (Include and ProxyJump
  followed); one paramiko connection per node is reused for every command (lazy connect, one reconnect
  when the transport died). Every wait is bounded: TCP connect, banner, key exchange and auth by
  `connect_timeout`; the channel open, the exec request and every read by the command's own timeout.
- Commands are the /bin/sh scripts `modeldrop.nodes` builds, handed to the login shell as
  `/bin/sh -c '<script>'` (or as octal escapes `printf` decodes), so every login shell runs the same argv.
- Host keys are checked against every known_hosts file that applies (the explicit file, ssh_config's
  UserKnownHostsFile and GlobalKnownHostsFile, else /etc/ssh/ssh_known_hosts{,2}), as OpenSSH does: a key
  any of them pins passes, whatever another file pins (a stale global entry does not block a right user
  pin); a pinned node is asked for a key of a pinned type and refused when it presents none that matches,
  with the `ssh-keygen -R … -f FILE` of each file that pins it; a new host is accepted only with
  `accept_new_host_keys=True` and only when no file pins any key for it.
"""

from __future__ import annotations

import glob
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from modeldrop.errors import CommandTimeout, NodeError
from modeldrop.nodes import LineCallback, Node, _Exec, _Lines, login_shell_text

GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
NO_STATUS_NOTE = ("\n[modeldrop] the SSH channel closed without an exit status: the command was killed by a "
                  "signal, or the node's sshd / the connection went away\n")

# ---------------------------------------------------------------------------------------------------
class HostKeyUnknown(NodeError):
    """The node's host key is not in known_hosts and accepting new keys was not asked for."""


class HostKeyPinned(NodeError):
    """A known_hosts file pins a key for the node and the node presents none that matches."""

    def __init__(self, hostname: str, key: paramiko.PKey | None, pins: list[Pin], changed: bool):
        shown = f"{key.get_name()} {key.fingerprint}" if key is not None else "no key of a pinned type"
        super().__init__(f"{hostname} presents {shown}")
        self.hostname, self.key, self.pins, self.changed = hostname, key, pins, changed


@dataclass(frozen=True)
class Pin:
    """A host key a known_hosts file pins for the node."""

    path: Path
    key: paramiko.PKey

    def __str__(self) -> str:
        return f"{self.key.get_name()} {self.key.fingerprint} in {self.path}"


KEY_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                  "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-dss")
_ALGORITHMS_OF = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def disabled_key_algorithms(pins: list[Pin]) -> list[str]:
    """Host key algorithms to leave out so that a pinned node presents a key of a pinned type (none when the
    node is not pinned); certificates are never asked for."""
    if not pins:
        return []
    allowed = {a for p in pins for a in _ALGORITHMS_OF.get(p.key.get_name(), (p.key.get_name(),))}
    every = [*KEY_ALGORITHMS, *(f"{a}-cert-v01@openssh.com" for a in KEY_ALGORITHMS)]
    return [a for a in every if a not in allowed]


class _PinPolicy(paramiko.MissingHostKeyPolicy):
    """Every host key decision (paramiko's own key stores stay empty, so it asks for each): a key any known_hosts
    file pins passes, as with OpenSSH, whichever file pins it and whatever other files say; a pinned node
    presenting another key is refused, naming the files; an unpinned node is accepted, and recorded in the
    user file, only with accept_new."""

    def __init__(self, pins: list[Pin], accept_new: bool, record_in: Path):
        self.pins, self.accept_new, self.record_in = pins, accept_new, record_in

    def missing_host_key(self, client, hostname, key):
        if any(p.key.get_name() == key.get_name() and p.key.asbytes() == key.asbytes() for p in self.pins):
            return
        if self.pins:
            changed = any(p.key.get_name() == key.get_name() for p in self.pins)
            raise HostKeyPinned(hostname, key, self.pins, changed)
        if not self.accept_new:
            raise HostKeyUnknown(f"{hostname} {key.get_name()} {key.fingerprint}")
        self.record_in.parent.mkdir(parents=True, exist_ok=True)
        with open(self.record_in, "a", encoding="utf-8") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


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


def _connect_cause(exc: BaseException, timeout_s: float) -> str:
    """What a failed connect means: paramiko says "No existing session" or "Error reading SSH protocol banner"
    when the TCP connection was accepted but no SSH banner came."""
    cause = str(exc).strip() or type(exc).__name__
    if "No existing session" in cause or "protocol banner" in cause:
        return (f"the port accepted the TCP connection but sent no SSH banner within {timeout_s:g}s "
                f"(a wedged sshd, or not an SSH server on that port) [{cause}]")
    return cause


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
        pins = host_pins(r)
        client.set_missing_host_key_policy(_PinPolicy(pins, self.accept_new_host_keys, r.known_hosts))
        where = f"{self.name} ({self.target} -> {r.user + '@' if r.user else ''}{r.hostname}:{r.port})"
        try:
            client.connect(r.hostname, port=r.port, username=r.user, key_filename=r.identity_files or None,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, allow_agent=True, look_for_keys=not r.identity_files,
                           sock=paramiko.ProxyCommand(r.proxy_command) if r.proxy_command else None,
                           disabled_algorithms={"keys": disabled_key_algorithms(pins)})
        except HostKeyUnknown as exc:
            client.close()
            raise NodeError(f"{where}: host key not in {r.known_hosts} (key {exc}); check it, then rerun with "
                            "--accept-new-host-keys to record it") from None
        except HostKeyPinned as exc:
            client.close()
            raise NodeError(pinned_refusal(where, r, exc)) from None
        except paramiko.ssh_exception.IncompatiblePeer as exc:
            client.close()
            if pins and "host key" in str(exc):  # the node has no key of any pinned type
                raise NodeError(pinned_refusal(where, r, HostKeyPinned(host_key_name(r), None, pins, False))) from None
            raise NodeError(f"{where}: cannot connect: {_connect_cause(exc, self.connect_timeout)}") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise NodeError(f"{where}: authentication failed ({exc}); identity files: "
                            f"{', '.join(r.identity_files) or 'default keys/agent'}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            raise NodeError(f"{where}: cannot connect: {_connect_cause(exc, self.connect_timeout)}") from None
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


def host_key_name(r: SSHTarget) -> str:
    """How known_hosts names the target: `host`, or `[host]:port` off port 22."""
    return r.hostname if r.port == 22 else f"[{r.hostname}]:{r.port}"


def host_pins(r: SSHTarget) -> list[Pin]:
    """Every key a known_hosts file pins for the target (user files first, hashed names included); unreadable
    or missing files are skipped."""
    pins: list[Pin] = []
    for path in _kh_files(r):
        try:
            if not path.is_file():
                continue
            found = paramiko.HostKeys(str(path)).lookup(host_key_name(r)) or {}
        except (OSError, paramiko.SSHException, ValueError):
            continue
        pins += [Pin(path, key) for key in found.values()]
    return pins


def pinned_refusal(where: str, r: SSHTarget, exc: HostKeyPinned) -> str:
    """One line for a pinned node that presented no pinned key: what it presents, which file pins what, and the
    command that removes each stale entry (from the file it is in, the global one included)."""
    name = host_key_name(r)
    files = list(dict.fromkeys(p.path for p in exc.pins))
    fix = "; ".join(f"ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(str(f))}" for f in files)
    pinned = ", ".join(str(p) for p in exc.pins)
    head = "host key CHANGED" if exc.changed else "host key refused"
    if exc.key is None:
        shown = "offers no host key of a pinned type"
    else:
        shown = f"presents {exc.key.get_name()} {exc.key.fingerprint}"
    return (f"{where}: {head}: the node {shown}, known_hosts pins {pinned}; if the node's keys really changed "
            f"(reinstalled), check the new key, remove the stale entries ({fix}) and rerun with "
            "--accept-new-host-keys; --accept-new-host-keys alone never overrides a pinned key")


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



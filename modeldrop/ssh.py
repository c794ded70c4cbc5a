"""SSH nodes: `SSHNode` (paramiko) and how a target becomes a connection.

Contract:
- Targets are `user@host[:port]`, `user@[v6addr][:port]` or an ssh_config alias, resolved as OpenSSH
  resolves them: `ssh -G` where an ssh client is installed (Include, Match, ProxyJump, tokens), else paramiko's
  parser (Include and ProxyJump followed). An alias that is neither in SSH_CONFIG nor a resolvable host name is
  said so. One paramiko connection per node is reused for every command (lazy connect, one reconnect
  when the transport died).
- The keys offered are the ones OpenSSH would offer: IdentityFile keys (with their `-cert.pub` and any
  CertificateFile that certifies them, certificate first), then the agent's keys from IdentityAgent (a socket
  path, `SSH_AUTH_SOCK`, or `none`; default SSH_AUTH_SOCK), only those of the IdentityFiles under
  IdentitiesOnly. An IdentityAgent socket that does not exist is one error line naming the node and path.
  StrictHostKeyChecking `accept-new` (and `no`, which is taken as accept-new: a pinned key is never overridden)
  accepts a node no known_hosts file pins, as `--accept-new-host-keys` does.
- Every wait is bounded: TCP connect, banner, key exchange and auth by `connect_timeout`; the channel open, the
  exec request and every read by the command's own timeout.
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

import copy
import functools
import getpass
import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.agent import AgentKey, AgentSSH
from paramiko.message import Message
from paramiko.pkey import PublicBlob

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
    """Where and how to connect, after ssh_config resolution (`via`: "ssh -G" or "paramiko"). `identity_agent`:
    None for SSH_AUTH_SOCK's agent, "none" for no agent, else the socket path; `host` is the name the target
    gave (an alias, or the host itself)."""

    hostname: str
    port: int
    user: str | None
    identity_files: list[str]
    known_hosts: Path
    proxy_command: str | None
    user_known_hosts: list[Path] = field(default_factory=list)
    global_known_hosts: list[Path] = field(default_factory=list)
    certificate_files: list[str] = field(default_factory=list)
    identity_agent: str | None = None
    identities_only: bool = False
    strict_host_key_checking: str = "ask"
    host: str = ""
    config_path: Path | None = None
    via: str = "paramiko"


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


SSH_G_TIMEOUT_S = 10.0
# what OpenSSH uses when ssh_config sets no IdentityFile / UserKnownHostsFile (ssh -G prints these then)
DEFAULT_IDENTITIES = tuple(f"~/.ssh/id_{t}" for t in ("rsa", "ecdsa", "ecdsa_sk", "ed25519", "ed25519_sk", "xmss",
                                                      "dsa"))
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
_LIST_KEYS = ("identityfile", "certificatefile")


def ssh_g(host: str, ssh_config: Path | None, user: str | None = None, port: int | None = None,
          ssh: str | None = None) -> dict[str, list[str]] | None:
    """`ssh -G` for host (with the target's own user and port, which win over ssh_config as on ssh's command
    line): {lower-case keyword: [values]}; None when no ssh client is installed. A config ssh cannot read is a
    NodeError of one line (ssh's own words)."""
    ssh = ssh or shutil.which("ssh")
    if ssh is None:
        return None
    argv = [ssh, "-G", "-F", str(ssh_config) if ssh_config is not None else os.devnull]
    argv += (["-l", user] if user else []) + (["-p", str(port)] if port else []) + ["--", host]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=SSH_G_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NodeError(f"{host}: `ssh -G` did not answer: {exc}") from None
    if p.returncode != 0:
        said = [ln for ln in p.stderr.splitlines() if ln.strip() and "Pseudo-terminal" not in ln]
        raise NodeError(f"{host}: ssh cannot read SSH_CONFIG {ssh_config}: {said[0] if said else f'rc {p.returncode}'}")
    out: dict[str, list[str]] = {}
    for line in p.stdout.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            out.setdefault(key.lower(), []).append(value.strip())
    return out


def _paramiko_options(host: str, cfg_path: Path) -> dict[str, list[str]]:
    """ssh_config as paramiko reads it (Include inlined), in `ssh_g`'s shape; {} without a config file."""
    if not cfg_path.is_file():
        return {}
    opts = paramiko.SSHConfig.from_text(_config_text(cfg_path)).lookup(host)
    return {k: [str(x) for x in v] if isinstance(v, list) else [str(v)] for k, v in opts.items()}


def _tokens(value: str, *, host: str, hostname: str, port: int, user: str) -> str:
    """OpenSSH's %-tokens ssh -G leaves in a value (%h %p %r %n %u %d %%) expanded, then `~`."""
    table = {"h": hostname, "p": str(port), "r": user, "n": host, "u": getpass.getuser(),
             "d": os.path.expanduser("~"), "%": "%"}
    return os.path.expanduser(re.sub(r"%([hprnud%])", lambda m: table[m.group(1)], value))


def _known_hosts(words: list[str], default: tuple[str, ...] | None) -> list[Path] | None:
    """The files a *KnownHostsFile value names (`none`: none); None when it is OpenSSH's default (not set)."""
    flat = [w for v in words for w in shlex.split(v)]
    if default is not None and tuple(flat) in (default, tuple(os.path.expanduser(d) for d in default)):
        return None
    return [Path(os.path.expanduser(w)) for w in flat if w.lower() != "none"]


def resolve_target(target: str, ssh_config: Path | None, known_hosts: Path | None,
                   ssh: str | None = None) -> SSHTarget:
    """Parse `user@host[:port]`, `user@[v6addr][:port]` or an alias and apply ssh_config as OpenSSH does (`ssh -G`,
    else paramiko's parser): HostName, User, Port, IdentityFile, CertificateFile, IdentityAgent, IdentitiesOnly,
    StrictHostKeyChecking, UserKnownHostsFile, GlobalKnownHostsFile, ProxyCommand/ProxyJump."""
    user, _, hostport = target.rpartition("@")
    host, port = split_host_port(hostport)
    cfg_path = ssh_config if ssh_config is not None else Path("~/.ssh/config").expanduser()
    opts = ssh_g(host, cfg_path if cfg_path.is_file() else None, user or None, port, ssh)
    via = "ssh -G" if opts is not None else "paramiko"
    if opts is None:
        opts = _paramiko_options(host, cfg_path)
    one = {k: v[-1] if k not in _LIST_KEYS else v for k, v in opts.items()}
    hostname, port = one.get("hostname", host), port or int(one.get("port", 22))
    user = user or one.get("user") or None
    expand = functools.partial(_tokens, host=host, hostname=hostname, port=port, user=user or getpass.getuser())
    identities = [expand(p) for p in opts.get("identityfile", [])]
    if not identities or tuple(opts.get("identityfile", [])) == DEFAULT_IDENTITIES:
        identities = [os.path.expanduser(p) for p in DEFAULT_IDENTITIES]
    user_files = list(dict.fromkeys(([Path(known_hosts)] if known_hosts is not None else []) +
                                    (_known_hosts(opts.get("userknownhostsfile", []), DEFAULT_USER_KNOWN_HOSTS) or [])))
    global_files = _known_hosts(opts["globalknownhostsfile"], None) if "globalknownhostsfile" in opts \
        else [Path(p) for p in GLOBAL_KNOWN_HOSTS]
    proxy = one.get("proxycommand")
    proxy = expand(proxy) if proxy and proxy.lower() != "none" else None
    if not proxy and one.get("proxyjump") and one["proxyjump"].lower() != "none":
        jump = one["proxyjump"].split(",")[0]
        proxy = shlex.join(["ssh", *(["-F", str(cfg_path)] if cfg_path.is_file() else []), "-W",
                            f"{hostname}:{port}", jump])
    strict = one.get("stricthostkeychecking", "ask").lower()
    strict = {"true": "yes", "false": "no", "off": "no"}.get(strict, strict)
    return SSHTarget(hostname=hostname, port=port, user=user,
                     identity_files=identities, known_hosts=user_files[0] if user_files else
                     Path("~/.ssh/known_hosts").expanduser(), proxy_command=proxy,
                     user_known_hosts=user_files or [Path("~/.ssh/known_hosts").expanduser()],
                     global_known_hosts=global_files or [],
                     certificate_files=[expand(p) for p in opts.get("certificatefile", [])],
                     identity_agent=one.get("identityagent"),
                     identities_only=one.get("identitiesonly", "no").lower() == "yes",
                     strict_host_key_checking=strict, host=host,
                     config_path=cfg_path if cfg_path.is_file() else None, via=via)


# ---------------------------------------------------------------------------------------------------
# the keys offered: what OpenSSH would offer, handed to paramiko's SSHClient as the keys of its agent
def agent_socket(r: SSHTarget) -> str | None:
    """The agent socket to use: IdentityAgent's (env variables and ~ expanded), SSH_AUTH_SOCK's by default or when
    IdentityAgent names it, None for `none` or no agent."""
    value = r.identity_agent
    if value is None or value.strip("${}") == "SSH_AUTH_SOCK":
        return os.environ.get("SSH_AUTH_SOCK") or None
    if value.lower() == "none":
        return None
    return os.path.expanduser(os.path.expandvars(value))


class _AgentAt(AgentSSH):
    """The ssh-agent protocol on one socket path (paramiko's Agent only reads SSH_AUTH_SOCK)."""

    def __init__(self, path: str, timeout: float):
        super().__init__()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout)
        try:
            conn.connect(path)
        except OSError:
            conn.close()
            raise
        self._connect(conn)

    def close(self) -> None:
        self._close()


class _Offered:
    """The keys SSHClient offers when it asks its agent (`get_keys`), in order; `close` ends the agent session."""

    def __init__(self, keys: list[paramiko.PKey], agent: _AgentAt | None, described: list[str]):
        self.keys, self.agent, self.described = tuple(keys), agent, described

    def get_keys(self) -> tuple[paramiko.PKey, ...]:
        return self.keys

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()


def _fields(blob: bytes, skip: int) -> bytes:
    """A public key blob without its type string and `skip - 1` further strings (a certificate's nonce)."""
    m = Message(blob)
    for _ in range(skip):
        m.get_binary()
    return m.get_remainder()


def certifies(cert: PublicBlob, key: paramiko.PKey) -> bool:
    """True when the certificate is of this key (its public key fields follow the certificate's nonce)."""
    try:
        return _fields(cert.key_blob, 2).startswith(_fields(key.asbytes(), 1))
    except Exception:  # noqa: BLE001 - a malformed blob certifies nothing
        return False


def _public_blob(path: Path) -> bytes | None:
    """The public key of an IdentityFile (its .pub, or the file itself when it is a .pub), for IdentitiesOnly."""
    pub = path if path.name.endswith(".pub") else path.with_name(path.name + ".pub")
    try:
        return PublicBlob.from_file(str(pub)).key_blob
    except (OSError, ValueError, paramiko.SSHException):
        return None


def _with_cert(key: paramiko.PKey, cert: PublicBlob) -> paramiko.PKey:
    """A copy of key that offers the certificate."""
    dup = AgentKey(key.agent, key.blob, key.comment) if isinstance(key, AgentKey) else copy.copy(key)
    dup.public_blob = cert
    return dup


def offered_keys(name: str, r: SSHTarget, timeout: float) -> _Offered:
    """The keys to offer (see the module docstring); NodeError when IdentityAgent names a socket that is not
    there."""
    keys: list[paramiko.PKey] = []
    certs: list[paramiko.PKey] = []
    described: list[str] = []
    wanted: set[bytes] = set()
    for f in r.identity_files:
        path = Path(f)
        blob = _public_blob(path)
        if blob:
            wanted.add(blob)
        if path.name.endswith(".pub") or not path.is_file():
            continue
        try:
            key = paramiko.PKey.from_path(path)  # with its -cert.pub when there is one
        except paramiko.PasswordRequiredException:
            described.append(f"{f} (encrypted: offered only through the agent)")
            continue
        except (paramiko.SSHException, ValueError, OSError) as exc:
            described.append(f"{f} (unreadable: {exc})")
            continue
        if getattr(key, "public_blob", None) is not None:  # its -cert.pub: offered first, the key itself too
            certs.append(key)
            key = copy.copy(key)
            key.public_blob = None
        wanted.add(key.asbytes())
        keys.append(key)
        described.append(f)
    agent = None
    sock = agent_socket(r)
    configured = r.identity_agent is not None and r.identity_agent.strip("${}") != "SSH_AUTH_SOCK"
    if sock is not None and configured and not os.path.exists(sock):
        cfg = f"SSH_CONFIG {r.config_path}" if r.config_path else "ssh_config"
        raise NodeError(f"{name}: IdentityAgent {sock} (from {cfg}) does not exist: start that agent (1Password: "
                        "Settings > Developer > Use the SSH agent; Secretive: open the app) or remove IdentityAgent "
                        f"from the Host block of {r.host} to use SSH_AUTH_SOCK's agent")
    if sock is not None:
        try:
            agent = _AgentAt(sock, timeout)
        except (OSError, paramiko.SSHException) as exc:
            described.append(f"agent {sock} (not answering: {exc})")
    agent_keys = [k for k in (agent.get_keys() if agent else ()) if not r.identities_only or k.asbytes() in wanted]
    if agent is not None:
        described.append(f"{len(agent_keys)} key(s) of the agent at {sock}"
                         + (" (IdentitiesOnly: those of the IdentityFiles)" if r.identities_only else ""))
    plain = keys + agent_keys
    for c in r.certificate_files:
        try:
            blob = PublicBlob.from_file(c)
        except (OSError, ValueError, paramiko.SSHException) as exc:
            described.append(f"certificate {c} (unreadable: {exc})")
            continue
        matching = [_with_cert(k, blob) for k in plain if certifies(blob, k)]
        described.append(f"certificate {c}" + ("" if matching else " (of no key offered)"))
        certs += matching
    return _Offered(certs + plain, agent, described)


def unresolved(name: str, target: str, r: SSHTarget, exc: socket.gaierror) -> str:
    """One line for a host name that does not resolve: an alias SSH_CONFIG does not know is said so."""
    cfg = f"SSH_CONFIG {r.config_path}" if r.config_path else "SSH_CONFIG (no such file)"
    why = exc.strerror or str(exc)
    if "@" not in target and r.hostname == r.host:
        return (f"{name} ({target}): alias {r.host} is not in {cfg} (no Host {r.host} with a HostName there) and "
                f"does not resolve as a host name ({why}); add `Host {r.host}` with `HostName <address>` to it, or "
                f"name the node user@address")
    mapped = f" (HostName of {r.host} in {cfg})" if r.hostname != r.host else ""
    return f"{name} ({target}): cannot resolve {r.hostname}{mapped}: {why}"


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
            try:
                self._resolved = resolve_target(self.target, self.ssh_config, self.known_hosts)
            except NodeError as exc:
                raise NodeError(f"{self.name} ({self.target}): {exc}") from None
        return self._resolved

    def address(self) -> str:
        host = self.resolved.hostname
        try:
            return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
        except socket.gaierror as exc:
            raise NodeError(unresolved(self.name, self.target, self.resolved, exc)) from None

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
        accept_new = self.accept_new_host_keys or r.strict_host_key_checking in ("accept-new", "no")
        client.set_missing_host_key_policy(_PinPolicy(pins, accept_new, r.known_hosts))
        where = f"{self.name} ({self.target} -> {r.user + '@' if r.user else ''}{r.hostname}:{r.port})"
        offered = offered_keys(where, r, self.connect_timeout)
        # SSHClient offers its agent's keys: ours are the ones OpenSSH would offer (files, certificates, the
        # IdentityAgent's), so its own key file search stays off; SSHClient.close() closes our agent session
        client._agent = offered
        try:
            client.connect(r.hostname, port=r.port, username=r.user, key_filename=None,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, allow_agent=True, look_for_keys=False,
                           sock=paramiko.ProxyCommand(r.proxy_command) if r.proxy_command else None,
                           disabled_algorithms={"keys": disabled_key_algorithms(pins)})
        except HostKeyUnknown as exc:
            client.close()
            raise NodeError(f"{where}: host key not in {r.known_hosts} (key {exc}); check it, then rerun with "
                            "--accept-new-host-keys to record it (or set StrictHostKeyChecking accept-new for it "
                            "in SSH_CONFIG)") from None
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
            raise NodeError(f"{where}: authentication failed ({exc}); offered: "
                            f"{', '.join(offered.described) or 'nothing (no key file and no agent)'}") from None
        except socket.gaierror as exc:
            client.close()
            raise NodeError(unresolved(self.name, self.target, r, exc)) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            if not offered.keys and "No authentication methods" in str(exc):
                raise NodeError(f"{where}: authentication failed: no key to offer; tried: "
                                f"{', '.join(offered.described) or 'no key file and no agent'}") from None
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



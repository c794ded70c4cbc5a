"""A paramiko SSH server that misbehaves on purpose, for the wait-bounding fault tests.

`FakeSSHD(workdir, mode, addr)` listens on addr (an ephemeral port) and serves one behaviour:
- `banner`: accepts TCP and never says anything (a wedged sshd before the banner);
- `auth`:   completes key exchange, then never answers the publickey auth request;
- `exec`:   authenticates and opens the session, then never answers the exec request;
- `silent`: answers the exec request and then sends nothing, ever (no output, no exit status);
- `ok`:     answers exec with `ran: <command>` on stdout and exit status 0.
Blocked callbacks are released by `stop()`, which also closes every socket it accepted. `target`,
`ssh_config` and `known_hosts` reach it with the client key.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import paramiko

from tests_selftest.support.listener import Listener
from tests_selftest.support.sshd_fixture import keygen


class _Server(paramiko.ServerInterface):
    def __init__(self, fake: FakeSSHD):
        self.fake = fake

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        if self.fake.mode == "auth":
            self.fake.release.wait()
            return paramiko.AUTH_FAILED
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        self.fake.commands.append(command.decode() if isinstance(command, bytes) else command)
        if self.fake.mode == "exec":
            self.fake.release.wait()
            return False
        if self.fake.mode == "ok":
            threading.Thread(target=self._answer, args=(channel, command), daemon=True).start()
        return True

    @staticmethod
    def _answer(channel, command) -> None:
        text = command.decode() if isinstance(command, bytes) else command
        channel.sendall(f"ran: {text}\n".encode())
        channel.send_exit_status(0)
        channel.shutdown_write()  # EOF, not close: a close could overtake the exec request's answer


class FakeSSHD:
    """See the module docstring."""

    def __init__(self, workdir: Path, mode: str, addr: str = "127.0.0.1"):
        self.mode, self.addr = mode, addr
        self.release = threading.Event()
        self.commands: list[str] = []
        self._transports: list[paramiko.Transport] = []
        self._channels: list[paramiko.Channel] = []
        keygen(workdir / "host")
        self.host_key = paramiko.Ed25519Key.from_private_key_file(str(workdir / "host"))
        keygen(workdir / "client")
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.listener = Listener(self._handshake, addr, family)
        self.port = self.listener.port
        bracket = f"[{addr}]" if ":" in addr else addr
        self.target = f"root@{bracket}:{self.port}"
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text(f"[{addr}]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n")
        self.ssh_config = workdir / "ssh_config"
        self.ssh_config.write_text(f"Host *\n    IdentityFile {workdir / 'client'}\n"
                                   f"    GlobalKnownHostsFile {workdir / 'no_global_known_hosts'}\n")

    def _handshake(self, conn: socket.socket) -> None:
        """One connection: held silent in mode `banner`, else an SSH server transport accepting channels."""
        if self.mode == "banner":
            return
        t = paramiko.Transport(conn)
        t.add_server_key(self.host_key)
        self._transports.append(t)
        try:
            t.start_server(server=_Server(self))
        except (paramiko.SSHException, EOFError, OSError):
            return
        self._accept_channels(t)

    def _accept_channels(self, t: paramiko.Transport) -> None:
        while t.is_active():
            chan = t.accept(1)
            if chan is not None:
                self._channels.append(chan)  # paramiko keeps channels weakly: hold them while serving

    def stop(self) -> None:
        """Release blocked callbacks and close every socket."""
        self.release.set()
        self.listener.close()
        for t in self._transports:
            t.close()

"""A running hub seen from outside: start it as its own process, drive it over HTTP, stop it by pid.

Contract: `start_hub(...)` runs `python -m sandbox.hub` on the caller's loopback address and port, or
reuses the one its pid file names when that one is alive there and runs the current code; it waits until
the hub answers and returns a `HubHandle`. `stop_hub(pid_file, host, port)` stops exactly that process
(pid checked against /proc/<pid>/cmdline).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.hub.server import code_hash
from sandbox.procs import pid_matches, read_pid, stop_pid, wait_until


@dataclass
class HubHandle:
    """A running hub (in this process or another), driven over HTTP."""

    host: str
    port: int
    pid: int | None = None
    pid_file: Path | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        """The HF_ENDPOINT value."""
        return f"http://{self.host}:{self.port}"

    def _call(self, path: str, body: dict | None = None, timeout: float = 5.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise ValueError(f"hub refused {path}: {e.code} {e.read().decode(errors='replace')}") from None

    def health(self) -> dict[str, Any]:
        """GET /_sandbox/health (raises when the hub does not answer)."""
        return self._call("/_sandbox/health", timeout=2.0)

    def set_faults(self, faults: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """Replace all fault switches (see `Faults`); `set_faults()` clears them."""
        return self._call("/_sandbox/faults", {**(faults or {}), **kw})

    def clear_faults(self) -> dict[str, Any]:
        """Back to a healthy hub."""
        return self.set_faults({})

    def get_faults(self) -> dict[str, Any]:
        """The fault switches in force."""
        return self._call("/_sandbox/faults")

    def commit(self, repo_id: str) -> str | None:
        """The commit sha `main` resolves to now (with overrides), or None for an unknown repo."""
        return self._call(f"/_sandbox/commit/{repo_id}")["commit"]

    def requests(self) -> list[dict[str, Any]]:
        """Every request logged so far (the request log's JSON lines; a line still being written is left out)."""
        if not self.log_path or not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def is_alive(self) -> bool:
        """True when the pid still is this hub and it answers."""
        if self.pid is not None and not pid_matches(self.pid, _needles(self.host, self.port)):
            return False
        try:
            return bool(self.health().get("ok"))
        except OSError:
            return False


def _needles(host: str, port: int) -> list[str]:
    return ["sandbox.hub", "--host", host, "--port", str(port)]


def start_hub(repos_dir: Path, host: str, port: int, log_path: Path, pid_file: Path,
              python: str = sys.executable, timeout: float = 20.0) -> HubHandle:
    """Start the hub process, or reuse the one the pid file names when it is alive on host:port
    and runs the current code (otherwise that one is stopped first)."""
    pid = read_pid(pid_file)
    handle = HubHandle(host, port, pid, pid_file, log_path)
    if pid and handle.is_alive():
        if handle.health().get("code") == code_hash():
            return handle
        stop_pid(pid, _needles(host, port))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "sandbox.hub", "--repos", str(repos_dir), "--host", host, "--port", str(port),
            "--log", str(log_path), "--pid-file", str(pid_file)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    stderr_path = log_path.with_suffix(".stderr")
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                start_new_session=True, env=env, cwd="/")
    handle.pid = proc.pid

    def up() -> bool:
        if proc.poll() is not None:
            tail = stderr_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"hub exited with {proc.returncode}: {tail}")
        return handle.is_alive()

    try:
        wait_until(up, timeout, f"the hub to answer on {handle.url}")
    except RuntimeError:
        raise
    return handle


def stop_hub(pid_file: Path, host: str, port: int) -> bool:
    """Stop the hub named by `pid_file` if that pid still is the hub on host:port."""
    stopped = stop_pid(read_pid(pid_file), _needles(host, port))
    pid_file.unlink(missing_ok=True)
    return stopped


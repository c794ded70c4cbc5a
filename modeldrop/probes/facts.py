"""Probe `facts`: {} -> who and where the node is (python, platform, home, user and uid, PATH, OS version,
hostname and machine id: two targets that reach the same machine and user are one node)."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
import sys


def _sw_vers() -> str | None:
    """macOS product version from sw_vers (platform.mac_ver() can say 16.0 on macOS 26)."""
    try:
        out = subprocess.run(["/usr/bin/sw_vers", "-productVersion"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10, check=False)
        return out.stdout.decode().strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _machine_id(plat: str):
    """This machine's id: /etc/machine-id on Linux, the kernel UUID (sysctl kern.uuid) on macOS; None if unknown."""
    if plat == "darwin":
        try:
            out = subprocess.run(["/usr/sbin/sysctl", "-n", "kern.uuid"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, timeout=10, check=False)
            return out.stdout.decode().strip() or None
        except (OSError, subprocess.SubprocessError):
            return None
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError:
            continue
    return None


def main(args: dict) -> dict:
    """Facts about the node and the python running this probe."""
    plat = "darwin" if sys.platform == "darwin" else ("linux" if sys.platform.startswith("linux") else sys.platform)
    conn = os.environ.get("SSH_CONNECTION", "").split()
    if plat == "darwin":
        os_version = _sw_vers()
    else:
        os_version = platform.platform()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    return {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "platform": plat,
        "machine": platform.machine(),
        "home": os.path.expanduser("~"),
        "user": user,
        "path_env": os.environ.get("PATH", ""),
        "ssh_server_addr": conn[2] if len(conn) >= 3 else None,
        "hostname": socket.gethostname(),
        "machine_id": _machine_id(plat),
        "uid": os.getuid(),
        "os_version": os_version,
        "pid": os.getpid(),
    }

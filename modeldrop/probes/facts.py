"""Probe `facts`: {} -> who and where the node is (python, platform, home, user and uid, PATH, OS version, boot,
hostname and machine id (two targets that reach the same machine and user are one node), the hardware model and
memory, the HF_ENDPOINT its own shell environment sets, which `hf` and exo would use when the run sets none, and
the exo installs found where exo installs to).

`boot_id` changes at every boot of the node and only then: Linux's /proc/sys/kernel/random/boot_id, macOS's
`kern.boottime` (`boottime:<sec>.<usec>`), else the boot time from /proc/stat; None when none can be read. With
`hostname` it names the machine and boot a launch record was made on.
"""

from __future__ import annotations

import getpass
import os
import platform
import re
import socket
import subprocess
import sys

# Where exo installs to, in the order a found one is reported (EXO_PLACES: (path, form)). Homebrew: Apple silicon
# and Intel prefixes; EXO.app: system and user Applications (its CLI runtime, not the GUI); uv tool and pipx put
# their console scripts in ~/.local/bin unless UV_TOOL_BIN_DIR / PIPX_BIN_DIR / XDG_BIN_HOME say otherwise.
EXO_PLACES = (
    ("/opt/homebrew/bin/exo", "Homebrew"),
    ("/usr/local/bin/exo", "Homebrew (Intel)"),
    ("/Applications/EXO.app/Contents/Resources/exo/exo", "EXO.app"),
    ("~/Applications/EXO.app/Contents/Resources/exo/exo", "EXO.app"),
    ("$UV_TOOL_BIN_DIR/exo", "uv tool"),
    ("$PIPX_BIN_DIR/exo", "pipx"),
    ("$XDG_BIN_HOME/exo", "uv tool / pipx"),
    ("~/.local/bin/exo", "uv tool / pipx"),
)

def _sw_vers() -> str | None:
    """macOS product version from sw_vers (platform.mac_ver() can say 16.0 on macOS 26)."""
    try:
        out = subprocess.run(["/usr/bin/sw_vers", "-productVersion"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10, check=False)
        return out.stdout.decode().strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def boot_id() -> str | None:
    """An id of this boot of the machine (see the module docstring)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        pass
    try:
        out = subprocess.run(["/usr/sbin/sysctl", "-n", "kern.boottime"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10, check=False).stdout.decode()
        m = re.search(r"sec\s*=\s*(\d+),\s*usec\s*=\s*(\d+)", out)
        if m:
            return "boottime:%s.%s" % m.groups()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return "btime:" + line.split()[1]
    except OSError:
        pass
    return None


def hardware() -> tuple:
    """(model, memory bytes): macOS's hw.model (e.g. Mac16,9) and hw.memsize; Linux's DMI product name and
    MemTotal; None for what cannot be read."""
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["/usr/sbin/sysctl", "-n", "hw.model", "hw.memsize"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, universal_newlines=True, timeout=10).stdout.split()
            return (out[0] if out else None), (int(out[1]) if len(out) > 1 and out[1].isdigit() else None)
        except (OSError, subprocess.SubprocessError):
            return None, None
    model = memory = None
    try:
        with open("/sys/devices/virtual/dmi/id/product_name") as f:
            model = f.read().strip() or None
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            m = re.search(r"^MemTotal:\s+(\d+) kB", f.read(), re.M)
            memory = int(m.group(1)) * 1024 if m else None
    except OSError:
        pass
    return model, memory
def install_form(path: str, real: str, form: str) -> str:
    """What kind of install a found exo is, told by where its real file lives (a ~/.local/bin link names its tool)."""
    if "/uv/tools/" in real:
        return "uv tool"
    if "/pipx/venvs/" in real:
        return "pipx"
    if "/Cellar/" in real or "/Caskroom/" in real:
        return "Homebrew"
    return form


def exo_installs() -> list:
    """Each exo found in EXO_PLACES (an executable file), once per real path: [{path, realpath, form}]."""
    out, seen = [], set()
    for place, form in EXO_PLACES:
        if place.startswith("$"):
            var, _, rest = place[1:].partition("/")
            base = os.environ.get(var)
            if not base:
                continue
            place = os.path.join(base, rest)
        path = os.path.expanduser(place)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        out.append({"path": path, "realpath": real, "form": install_form(path, real, form)})
    return out


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
    hw_model, memory_bytes = hardware()
    return {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "platform": plat,
        "machine": platform.machine(),
        "home": os.path.expanduser("~"),
        "user": user,
        "path_env": os.environ.get("PATH", ""),
        "hf_endpoint_env": os.environ.get("HF_ENDPOINT") or None,
        "ssh_server_addr": conn[2] if len(conn) >= 3 else None,
        "hostname": socket.gethostname(),
        "boot_id": boot_id(),
        "machine_id": _machine_id(plat),
        "uid": os.getuid(),
        "os_version": os_version,
        "pid": os.getpid(),
        "hw_model": hw_model,
        "memory_bytes": memory_bytes,
        "exo_installs": exo_installs(),
    }

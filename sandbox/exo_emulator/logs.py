"""exo's log sinks: ``exo.log`` in loguru's file format and a terse stderr format.

Contract: ``setup(path, verbosity)`` rotates an existing ``exo.log`` into a zstd archive
``exo.<time>.log.zst`` (5 kept; written as raw zstd blocks, readable by zstdcat) and then writes
``[ YYYY-MM-DD HH:mm:ss.SSS | LEVEL    | module:function:line ] message`` lines, INFO by default,
DEBUG with ``-v``. Stderr gets ``[ hh:mm:ss.SSSSAM | LEVEL   ] message`` (quiet: nothing).
Thread-safe; usable from every thread of the node process.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

LEVELS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "SUCCESS": 25, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_KEEP_ARCHIVES = 5
_BLOCK = 128 * 1024


def zstd_raw_frame(data: bytes) -> bytes:
    """Encode ``data`` as a valid zstd frame made of raw (stored) blocks."""
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out += bytes([0x00, 0x38])  # no FCS/checksum/dict; window 128 KiB
    chunks = [data[i:i + _BLOCK] for i in range(0, len(data), _BLOCK)] or [b""]
    for i, chunk in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        header = last | (0 << 1) | (len(chunk) << 3)
        out += struct.pack("<I", header)[:3] + chunk
    return bytes(out)


def rotate(log_file: Path) -> None:
    """Move a previous exo.log into ``exo.<time>.log.zst`` and prune to 5 archives."""
    if not log_file.exists():
        return
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    archive = log_file.with_name(f"exo.{stamp}.log.zst")
    archive.write_bytes(zstd_raw_frame(log_file.read_bytes()))
    log_file.unlink()
    archives = sorted(log_file.parent.glob("exo.*.log.zst"))
    for old in archives[:-_KEEP_ARCHIVES]:
        old.unlink(missing_ok=True)


class ExoLogger:
    """A minimal loguru look-alike with exo's two sinks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._file = None
        self._file_level = LEVELS["INFO"]
        self._stderr_level: int | None = LEVELS["INFO"]
        self._verbose = False

    def setup(self, log_file: Path, verbosity: int) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        rotate(log_file)
        self._file = open(log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._verbose = verbosity > 0
        self._file_level = LEVELS["DEBUG"] if verbosity > 0 else LEVELS["INFO"]
        if verbosity < 0:
            self._stderr_level = None
        else:
            self._stderr_level = LEVELS["DEBUG"] if verbosity > 0 else LEVELS["INFO"]

    def log(self, level: str, message: str, where: str = "exo.main:main:1") -> None:
        now = time.time()
        num = LEVELS[level]
        with self._lock:
            if self._file is not None and num >= self._file_level:
                stamp = datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                self._file.write(f"[ {stamp} | {level:<8} | {where} ] {message}\n")
            if self._stderr_level is not None and num >= self._stderr_level:
                self._stderr(now, level, message, where)

    def _stderr(self, now: float, level: str, message: str, where: str) -> None:
        dt = datetime.fromtimestamp(now)
        clock = dt.strftime("%I:%M:%S.") + f"{dt.microsecond // 100:04d}" + dt.strftime("%p")
        if self._verbose:
            line = f"[ {clock} | {level:<7} | {where.split(':')[0]} ] {message}\n"
        else:
            line = f"[ {clock} | {level:<7} ] {message}\n"
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def debug(self, m: str, where: str = "exo.main:main:1") -> None:
        self.log("DEBUG", m, where)

    def info(self, m: str, where: str = "exo.main:main:1") -> None:
        self.log("INFO", m, where)

    def warning(self, m: str, where: str = "exo.main:main:1") -> None:
        self.log("WARNING", m, where)

    def error(self, m: str, where: str = "exo.main:main:1") -> None:
        self.log("ERROR", m, where)

    def critical(self, m: str, where: str = "exo.main:main:1") -> None:
        self.log("CRITICAL", m, where)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


logger = ExoLogger()

"""Result record shared by every benchmarked method, and small process helpers."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024

#: ``status`` values: ``ok`` (measured and verified), ``pending`` (method not
#: available yet), ``invalid`` (ran, but the peer did not hold every instance),
#: ``error`` (failed or timed out).
STATUSES = ("ok", "pending", "invalid", "error")


@dataclass
class MethodResult:
    """What one method did with one corpus."""

    method: str
    status: str
    expected: int
    stored: int | None = None
    seconds: float | None = None
    total_bytes: int = 0
    peak_rss_bytes: int | None = None
    note: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def inst_per_s(self) -> float | None:
        """Instances per second of wall clock, when measured."""
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.expected / self.seconds

    @property
    def mb_per_s(self) -> float | None:
        """Megabytes (10^6 bytes) of DICOM files per second, when measured."""
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.total_bytes / 1e6 / self.seconds

    @property
    def peak_rss_mib(self) -> float | None:
        """Peak RSS in MiB, when sampled."""
        return None if self.peak_rss_bytes is None else self.peak_rss_bytes / MIB

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, with the derived rates included."""
        return {
            "method": self.method,
            "status": self.status,
            "expected_instances": self.expected,
            "stored_instances": self.stored,
            "seconds": _round(self.seconds, 3),
            "inst_per_s": _round(self.inst_per_s, 1),
            "mb_per_s": _round(self.mb_per_s, 1),
            "peak_rss_mib": _round(self.peak_rss_mib, 1),
            "note": self.note,
            "config": self.config,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def die_with_parent() -> None:
    """``preexec_fn``: have Linux send SIGTERM to the child if the bench dies.

    This keeps a killed benchmark from leaving an Orthanc or an ingest running.
    It is a no-op off Linux.
    """
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def log_tail(path: Path, lines: int = 15) -> str:
    """Last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def machine_info() -> dict[str, Any]:
    """CPU, memory and load, to read the numbers against."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        meminfo = Path("/proc/meminfo").read_text().split()
        mem_kib = int(meminfo[meminfo.index("MemTotal:") + 1])
    except (OSError, ValueError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_gib": round(mem_kib / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }

"""What the runner, the client and the report read about the machine itself."""

from __future__ import annotations

import platform
from pathlib import Path

import psutil

__all__ = ["busy_seconds", "cpu_model"]


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores) since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

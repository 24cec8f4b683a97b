"""The "machine" block of the report: what the figures were measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info(*, redis_version: str, postgres_version: str) -> dict[str, Any]:
    memory = _memory_bytes()
    return {
        "cpu_model": _cpu_model(),
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count() or 0,
        "memory_bytes": memory,
        "memory_gib": round(memory / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python_version": platform.python_version(),
        "redis_version": redis_version,
        "postgres_version": postgres_version,
    }

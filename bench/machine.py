"""The "machine" block of the report: what the figures were measured on."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from .stats import percentile

FSYNC_SAMPLES = 300
FSYNC_WRITE_BYTES = 2048  # about what one authorize appends to Redis's AOF


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


def fsync_latency_ms(directory: Path) -> dict[str, float]:
    """How long an append plus fdatasync takes on the disk under `directory` (where the
    embedded Redis keeps its AOF): with `appendfsync always`, Redis does one before
    replying to the writes of each event-loop turn, so this is a floor under every
    acknowledged authorization's latency."""
    samples: list[float] = []
    with tempfile.NamedTemporaryFile(dir=directory, prefix="fsync-probe-") as probe:
        block = b"x" * FSYNC_WRITE_BYTES
        for _ in range(FSYNC_SAMPLES):
            started = time.perf_counter()
            probe.write(block)
            probe.flush()
            os.fdatasync(probe.fileno())
            samples.append((time.perf_counter() - started) * 1000)
    return {
        "disk_fsync_p50_ms": percentile(samples, 50),
        "disk_fsync_p99_ms": percentile(samples, 99),
        "disk_fsync_max_ms": max(samples),
    }


def machine_info(
    *, redis_version: str, postgres_version: str, fsync_directory: Path
) -> dict[str, Any]:
    memory = _memory_bytes()
    return {
        **fsync_latency_ms(fsync_directory),
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

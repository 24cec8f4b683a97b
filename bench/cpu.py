"""Where the CPU went during a scenario: seconds of CPU per component (a process, and for
Postgres its backends), shown as % of one core (the machine has cores x 100%). On a
small machine everything shares the cores, so this says what limited a figure.

Read from /proc (Linux); elsewhere every component reads 0.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

Watched = tuple[int, bool]  # pid, and whether its descendants count too

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) of every process."""
    found: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (name) "
        try:
            found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
        except (IndexError, ValueError):
            continue
    return found


def _cpu_seconds(watched: Watched, stats: Mapping[int, tuple[int, float]]) -> float:
    pid, descendants = watched
    family = {pid}
    if descendants:
        for _ in range(10):  # depth bound; Postgres is two levels deep
            grown = {p for p, (parent, _) in stats.items() if parent in family} - family
            if not grown:
                break
            family |= grown
    return sum(stats[p][1] for p in family if p in stats)


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    seconds: Mapping[str, float]


class CpuMeter:
    """`components()` names the processes to watch (asked at each snapshot, so processes
    started later are found)."""

    def __init__(self, components: Callable[[], Mapping[str, list[Watched]]]) -> None:
        self._components = components

    def snapshot(self) -> CpuSnapshot:
        stats = _stats()
        return CpuSnapshot(
            time.monotonic(),
            {
                name: sum(_cpu_seconds(w, stats) for w in watched)
                for name, watched in self._components().items()
            },
        )

    @staticmethod
    def percent(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        """% of one core per component between two snapshots."""
        wall = max(after.at - before.at, 1e-9)
        return {
            name: 100.0 * max(0.0, after.seconds[name] - before.seconds.get(name, 0.0)) / wall
            for name in after.seconds
        }


def describe(percent: Mapping[str, float]) -> str:
    ordered = sorted(percent.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {value:.0f}%" for name, value in ordered)

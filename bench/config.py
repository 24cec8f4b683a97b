"""What one bench run does: durations, concurrency and sizes (full run or `--quick`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

ASSET = "USD"
HOT_FUNDS = 10**15  # nanos: far more than any run can spend at 1 nano per pair
SPREAD_FUNDS = 10**12
AMOUNT = 1  # every authorize/capture moves one nano
HOLD_TTL_SECONDS = 3600  # no hold expires during a run (no expiry work in the figures)


@dataclass(frozen=True)
class BenchConfig:
    quick: bool
    dry_run: bool
    client_processes: int  # load-generating processes (multiprocessing, asyncio in each)
    unary_clients: int  # concurrent closed-loop clients, in total over the processes
    warmup_seconds: float  # load before each measured window, not counted
    unary_seconds: float
    spread_wallets: int
    batch_size: int
    batch_in_flight: int  # BatchAuthorize calls in flight, in total
    batch_seconds: float
    raw_pipeline: int  # EVALSHAs per pipeline
    raw_in_flight: int  # pipelines in flight, in total (one connection each)
    raw_seconds: float
    latency_rate: int  # Authorize requests per second offered (open loop)
    latency_seconds: float
    latency_timeout_seconds: float
    writebehind_seconds: float
    lag_sample_seconds: float
    drain_timeout_seconds: float
    partitions: int
    redis_appendfsync: str
    service_start_timeout_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def full_config(*, client_processes: int | None = None) -> BenchConfig:
    return BenchConfig(
        quick=False,
        dry_run=False,
        client_processes=client_processes or max(2, os.cpu_count() or 2),
        unary_clients=64,
        warmup_seconds=2.0,
        unary_seconds=15.0,
        spread_wallets=10_000,
        batch_size=500,
        batch_in_flight=8,
        batch_seconds=15.0,
        raw_pipeline=500,
        raw_in_flight=16,  # fewer leaves Redis idle between pipelines (not a ceiling)
        raw_seconds=10.0,
        latency_rate=500,
        latency_seconds=20.0,
        latency_timeout_seconds=5.0,
        writebehind_seconds=30.0,
        lag_sample_seconds=0.1,
        drain_timeout_seconds=180.0,
        partitions=128,
        redis_appendfsync="always",
        service_start_timeout_seconds=90.0,
    )


def quick_config(*, client_processes: int | None = None) -> BenchConfig:
    """Every scenario for a second or two with small numbers: the same keys, no meaning."""
    return replace(
        full_config(client_processes=client_processes or 2),
        quick=True,
        warmup_seconds=0.3,
        unary_seconds=1.5,
        spread_wallets=200,
        batch_size=100,
        batch_in_flight=4,
        batch_seconds=1.5,
        raw_pipeline=100,
        raw_in_flight=4,
        raw_seconds=1.0,
        latency_rate=200,
        latency_seconds=1.5,
        writebehind_seconds=2.0,
        drain_timeout_seconds=60.0,
    )


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible (the first ones get the rest)."""
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]

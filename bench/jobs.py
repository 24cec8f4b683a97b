"""What a load-generating process is asked to do, and what it reports back (picklable).

Times are `time.monotonic()` values, which on Linux are the same clock in every process,
so all processes start and stop their measured window together.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    address: str  # 127.0.0.1:port
    api_key: str


@dataclass(frozen=True)
class Window:
    start_at: float  # load begins (warm-up)
    warmup: float
    duration: float

    @property
    def measure_from(self) -> float:
        return self.start_at + self.warmup

    @property
    def measure_until(self) -> float:
        return self.start_at + self.warmup + self.duration

    @property
    def measured(self) -> tuple[float, float]:
        return self.measure_from, self.measure_until

    def counts(self, at: float) -> bool:
        return self.measure_from <= at < self.measure_until


@dataclass(frozen=True)
class PairsJob:
    """Closed loop: each of `clients` coroutines does Authorize then Capture of the hold,
    again and again, on a random wallet of `wallet_ids`."""

    target: Target
    wallet_ids: tuple[str, ...]
    clients: int
    window: Window
    tag: str  # request_id prefix, unique per process and scenario
    collect_ids: bool = False  # return the request_ids of successful calls


@dataclass(frozen=True)
class BatchJob:
    """Closed loop: `in_flight` coroutines each send BatchAuthorize of `batch_size` items
    (random wallets) again and again."""

    target: Target
    wallet_ids: tuple[str, ...]
    batch_size: int
    in_flight: int
    window: Window
    tag: str


@dataclass(frozen=True)
class OpenLoopJob:
    """Open loop: call number i is sent at `start_at + offset + i / rate`, whatever the
    earlier ones are doing; latency counts from that scheduled time. The call is an
    Authorize, or with `health_check` the standard health Check (the transport floor: the
    same client, channel and server without auth, handler work or Redis)."""

    target: Target
    wallet_ids: tuple[str, ...]
    rate: float
    offset: float
    start_at: float
    duration: float
    timeout: float
    tag: str
    max_outstanding: int = 20_000
    health_check: bool = False


@dataclass(frozen=True)
class WarmJob:
    """GetWallet on each wallet once (the service's wallet directory learns them)."""

    target: Target
    wallet_ids: tuple[str, ...]
    concurrency: int


@dataclass(frozen=True)
class RawJob:
    """Closed loop straight into Redis: `in_flight` connections each send pipelines of
    `pipeline` authorize EVALSHAs (the backend's own script, keys and arguments)."""

    redis_url: str
    partitions: int
    wallet_ids: tuple[str, ...]
    pipeline: int
    in_flight: int
    window: Window
    tag: str
    dry_run: bool = False


@dataclass(frozen=True)
class SeedJob:
    """Create and fund 1 hot + `count` spread wallets for the service of `env`."""

    env: dict[str, str]
    count: int


Job = PairsJob | BatchJob | OpenLoopJob | WarmJob | RawJob | SeedJob


@dataclass
class JobResult:
    ok: int = 0  # operations (pairs, authorizations) completed OK in the window
    failed: int = 0  # operations that failed in the window
    calls: int = 0  # RPCs / pipelines completed in the window
    errors: Counter[str] = field(default_factory=Counter)  # by gRPC code / reason
    latencies_ms: list[float] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    send_late_max_ms: float = 0.0  # open loop: worst lateness of a send vs its schedule
    dropped: int = 0  # open loop: sends skipped because too many were outstanding
    wallet_ids: list[str] = field(default_factory=list)  # seeding: hot first

    def merge(self, other: JobResult) -> None:
        self.ok += other.ok
        self.failed += other.failed
        self.calls += other.calls
        self.errors.update(other.errors)
        self.latencies_ms.extend(other.latencies_ms)
        self.request_ids.extend(other.request_ids)
        self.send_late_max_ms = max(self.send_late_max_ms, other.send_late_max_ms)
        self.dropped += other.dropped
        self.wallet_ids.extend(other.wallet_ids)

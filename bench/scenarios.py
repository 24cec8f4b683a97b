"""The measured scenarios. Each hands jobs to the load processes (job i to process i), so
the load is split evenly over them, and turns their results into figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from obol_core.redis import RedisClient, create_redis

from .config import BenchConfig, split
from .cpu import CpuMeter, describe
from .grpc_load import errors_text
from .jobs import BatchJob, Job, JobResult, OpenLoopJob, PairsJob, RawJob, Target, Window
from .ledger_audit import Audit, LagSampler, audit, drain
from .machine import usable_cores
from .pool import LoadPool
from .progress import say
from .stats import percentile, rate

START_MARGIN = 1.5  # seconds for a job to reach its process and connect before load starts
T = TypeVar("T")


def merged(results: list[JobResult]) -> JobResult:
    total = JobResult()
    for result in results:
        total.merge(result)
    return total


def _with_redis(url: str, work: Callable[[RedisClient], Awaitable[T]]) -> T:
    async def run() -> T:
        client = create_redis(url)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


@dataclass
class Scenarios:
    config: BenchConfig
    pool: LoadPool
    redis_url: str
    check_alive: Callable[[], None]
    figures: dict[str, Any]
    cpu: CpuMeter

    @property
    def procs(self) -> int:
        return self.pool.size

    def _window(self, duration: float) -> Window:
        return Window(time.monotonic() + START_MARGIN, self.config.warmup_seconds, duration)

    def _run(self, key: str, jobs: list[Job], measured: tuple[float, float]) -> JobResult:
        """Run the jobs (one per process) and meter CPU over the measured window
        (`measured`: its monotonic start and end)."""
        start, end = measured
        with ThreadPoolExecutor(1) as executor:
            running = executor.submit(self.pool.run, jobs, timeout=end - time.monotonic() + 120)
            time.sleep(max(0.0, start - time.monotonic()))
            before = self.cpu.snapshot()
            time.sleep(max(0.0, end - time.monotonic()))
            after = self.cpu.snapshot()
            results = running.result()
        self._record_cpu(key, CpuMeter.percent(before, after))
        self.check_alive()
        return merged(results)

    def _record_cpu(self, key: str, percent: dict[str, float]) -> None:
        for name, value in percent.items():
            self.figures[f"cpu_{key}_{name}_pct"] = value
        say(f"  CPU, % of one core ({usable_cores() * 100}% in all): {describe(percent)}")

    def _record_errors(self, key: str, result: JobResult) -> None:
        self.figures[f"{key}_errors"] = result.failed
        if result.failed:
            say(f"  errors: {errors_text(result.errors)}")

    # ---- closed loop, unary ----

    def pairs(self, key: str, label: str, target: Target, wallets: tuple[str, ...]) -> JobResult:
        window = self._window(self.config.unary_seconds)
        clients = split(self.config.unary_clients, self.procs)
        say(
            f"{label}: {self.config.unary_clients} clients in {self.procs} processes, "
            f"{len(wallets)} wallet(s), {window.warmup:g}s warm-up + {window.duration:g}s"
        )
        jobs: list[Job] = [
            PairsJob(target, wallets, clients[i], window, tag=f"{key}-{i}")
            for i in range(self.procs)
        ]
        result = self._run(key.removesuffix("_ops"), jobs, window.measured)
        ops = rate(result.ok, window.duration)
        self.figures[key] = ops
        self._record_errors(key.removesuffix("_ops"), result)
        say(f"  {key} = {ops:,.0f} authorize+capture pairs/s")
        return result

    # ---- BatchAuthorize ----

    def batch(self, target: Target, wallets: tuple[str, ...]) -> None:
        c = self.config
        window = self._window(c.batch_seconds)
        in_flight = split(c.batch_in_flight, self.procs)
        say(
            f"BatchAuthorize (redis): batches of {c.batch_size} over {len(wallets)} wallets, "
            f"{c.batch_in_flight} in flight, {window.warmup:g}s warm-up + {window.duration:g}s"
        )
        jobs: list[Job] = [
            BatchJob(target, wallets, c.batch_size, in_flight[i], window, tag=f"batch-{i}")
            for i in range(self.procs)
            if in_flight[i]
        ]
        result = self._run("batch_obol", jobs, window.measured)
        self.figures["batch_obol_ops"] = rate(result.ok, window.duration)
        self._record_errors("batch_obol", result)
        say(f"  batch_obol_ops = {self.figures['batch_obol_ops']:,.0f} authorizations/s")

    # ---- raw Redis: the ceiling ----

    def raw(self, wallets: tuple[str, ...]) -> None:
        c = self.config
        window = self._window(c.raw_seconds)
        in_flight = split(c.raw_in_flight, self.procs)
        say(
            f"raw Redis: authorize script pipelined {c.raw_pipeline} at a time, "
            f"{c.raw_in_flight} pipelines in flight, "
            f"{window.warmup:g}s warm-up + {window.duration:g}s"
        )
        jobs: list[Job] = [
            RawJob(
                self.redis_url,
                c.partitions,
                wallets,
                c.raw_pipeline,
                in_flight[i],
                window,
                tag=f"raw-{i}",
                dry_run=c.dry_run,
            )
            for i in range(self.procs)
            if in_flight[i]
        ]
        result = self._run("raw_redis", jobs, window.measured)
        self.figures["raw_redis_ops"] = rate(result.ok, window.duration)
        self._record_errors("raw_redis", result)
        say(f"  raw_redis_ops = {self.figures['raw_redis_ops']:,.0f} authorizations/s")

    # ---- open loop: latency at a fixed offered rate ----

    def latency(self, target: Target, wallets: tuple[str, ...], *, appendfsync: str) -> None:
        """Open-loop Authorize latency with Redis's AOF fsync policy set to `appendfsync`
        for the scenario (CONFIG SET; the run's own policy is restored after it). Figures
        are `authorize_*` under the run's policy, `authorize_<policy>_*` under another."""
        c = self.config
        prefix = "authorize" if appendfsync == c.redis_appendfsync else f"authorize_{appendfsync}"
        say(
            f"Authorize latency (redis, appendfsync {appendfsync}): open loop, "
            f"{c.latency_rate}/s offered for {c.latency_seconds:g}s from {self.procs} processes"
        )
        relaxed = appendfsync != c.redis_appendfsync
        if relaxed:
            self._set_appendfsync(appendfsync)
        try:
            self._open_loop(prefix, target, wallets, health_check=False, what="authorizations")
        finally:
            if relaxed:
                self._set_appendfsync(c.redis_appendfsync)

    def transport_floor(self, target: Target) -> None:
        """The same open loop, client and rate against the wallet service's standard health
        Check: what the load generator, gRPC and this machine's scheduling cost on their own
        (no auth, no handler work, no Redis), the floor under `authorize_*`."""
        c = self.config
        say(
            f"Transport floor: open loop of health Checks on wallet_obol, "
            f"{c.latency_rate}/s offered for {c.latency_seconds:g}s from {self.procs} processes"
        )
        self._open_loop("floor", target, (), health_check=True, what="health checks")

    def _open_loop(
        self,
        prefix: str,
        target: Target,
        wallets: tuple[str, ...],
        *,
        health_check: bool,
        what: str,
    ) -> None:
        c = self.config
        start_at = time.monotonic() + START_MARGIN
        jobs: list[Job] = [
            OpenLoopJob(
                target,
                wallets,
                rate=c.latency_rate / self.procs,
                offset=i / c.latency_rate,
                start_at=start_at,
                duration=c.latency_seconds,
                timeout=c.latency_timeout_seconds,
                tag=f"{prefix}-{i}",
                health_check=health_check,
            )
            for i in range(self.procs)
        ]
        result = self._run(prefix, jobs, (start_at, start_at + c.latency_seconds))
        f = self.figures
        for pct in (50, 95, 99):
            f[f"{prefix}_p{pct}_ms"] = percentile(result.latencies_ms, pct)
        f[f"{prefix}_max_ms"] = max(result.latencies_ms, default=0.0)
        f[f"{prefix}_count"] = result.ok
        f[f"{prefix}_errors"] = result.failed + result.dropped
        f[f"{prefix}_send_late_max_ms"] = result.send_late_max_ms
        if result.failed:
            say(f"  errors: {errors_text(result.errors)}")
        say(
            f"  p50 {f[f'{prefix}_p50_ms']:.2f} ms, p95 {f[f'{prefix}_p95_ms']:.2f} ms, "
            f"p99 {f[f'{prefix}_p99_ms']:.2f} ms, max {f[f'{prefix}_max_ms']:.1f} ms "
            f"over {result.ok} {what}"
        )

    def _set_appendfsync(self, policy: str) -> None:
        async def configure(client: RedisClient) -> None:
            await client.config_set("appendfsync", policy)

        _with_redis(self.redis_url, configure)

    # ---- write-behind ----

    def drain(self, after: str) -> None:
        """Wait until the worker has written everything (so the next scenario starts clean)."""
        if self.config.dry_run:
            return
        drained, seconds, left = _with_redis(
            self.redis_url,
            lambda client: drain(client, self.config.partitions, self.config.drain_timeout_seconds),
        )
        self.figures[f"writebehind_drain_seconds_after_{after}"] = seconds
        if drained:
            say(f"  write-behind drained the backlog of {after} in {seconds:.1f}s")
        else:
            say(
                f"  write-behind did NOT drain after {after}: "
                f"{left} messages left after {seconds:.0f}s"
            )
        self.check_alive()

    def writebehind(self, target: Target, wallets: tuple[str, ...], database_url: str) -> None:
        c = self.config
        window = self._window(c.writebehind_seconds)
        clients = split(c.unary_clients, self.procs)
        say(
            f"write-behind under sustained load: {c.unary_clients} clients doing "
            f"authorize+capture over {len(wallets)} wallets for {window.duration:g}s, "
            f"lag sampled every {c.lag_sample_seconds:g}s"
        )
        jobs: list[Job] = [
            PairsJob(target, wallets, clients[i], window, tag=f"wb-{i}", collect_ids=True)
            for i in range(self.procs)
        ]

        async def work(
            client: RedisClient,
        ) -> tuple[JobResult, list[float], int, bool, float, Audit | None]:
            sampler = LagSampler(
                client,
                c.partitions,
                c.lag_sample_seconds,
                max_samples=int((window.warmup + window.duration + 60) / c.lag_sample_seconds),
            )
            sampling = asyncio.create_task(sampler.run())
            try:
                result = await asyncio.to_thread(self._run, "writebehind", jobs, window.measured)
            finally:
                sampler.stop()
                await sampling
            measured = [s for s in sampler.samples if window.counts(s.at)]
            lags = [s.oldest_age_ms for s in measured]
            backlog = max((s.backlog for s in measured), default=0)
            if c.dry_run:
                return result, lags, backlog, True, 0.0, None
            drained, seconds, _ = await drain(client, c.partitions, c.drain_timeout_seconds)
            say(f"  drained in {seconds:.1f}s; auditing the ledger")
            found = await audit(client, database_url, c.partitions, result.request_ids)
            return result, lags, backlog, drained, seconds, found

        result, lags, backlog, drained, seconds, found = _with_redis(self.redis_url, work)
        self.check_alive()
        f = self.figures
        f["writebehind_load_ops"] = rate(result.ok, window.duration)
        f["writebehind_load_errors"] = result.failed
        f["writebehind_lag_p50_ms"] = percentile(lags, 50)
        f["writebehind_lag_p99_ms"] = percentile(lags, 99)
        f["writebehind_lag_max_ms"] = max(lags, default=0.0)
        f["writebehind_lag_samples"] = len(lags)
        f["writebehind_backlog_max"] = backlog
        f["writebehind_drained"] = drained
        f["writebehind_drain_seconds"] = seconds
        _audit_figures(f, found)
        say(
            f"  load {f['writebehind_load_ops']:,.0f} pairs/s; "
            f"lag p50 {f['writebehind_lag_p50_ms']:.0f} ms, "
            f"p99 {f['writebehind_lag_p99_ms']:.0f} ms, max {f['writebehind_lag_max_ms']:.0f} ms; "
            f"backlog max {backlog}"
        )
        say(
            f"  ledger: {f['writebehind_entries_redis']} entries made in Redis, "
            f"{f['writebehind_entries_pg']} in Postgres; lost {f['writebehind_lost']}, "
            f"duplicated {f['writebehind_duplicated']}, requests without entries "
            f"{f['writebehind_lost_requests']} of {f['writebehind_requests_checked']}"
        )


def _audit_figures(f: dict[str, Any], found: Audit | None) -> None:
    if found is None:  # dry run: nothing was written behind
        found = Audit(0, 0, 0, 0, 0, 0, 0, 0, 0)
    f["writebehind_wallets_audited"] = found.wallets
    f["writebehind_entries_redis"] = found.produced
    f["writebehind_entries_pg"] = found.stored
    f["writebehind_lost"] = found.lost
    f["writebehind_duplicated"] = found.extra + found.duplicate_requests
    f["writebehind_duplicate_request_entries"] = found.duplicate_requests
    f["writebehind_entries_beyond_redis_seq"] = found.extra
    f["writebehind_entries_with_request_id"] = found.entries_with_request_id
    f["writebehind_requests_checked"] = found.requests_checked
    f["writebehind_lost_requests"] = found.requests_missing

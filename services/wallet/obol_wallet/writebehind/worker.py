"""WriteBehind: move the partitions' ledger streams into Postgres, acknowledging only after
COMMIT.

Each partition `p` has a stream `{pN}:ledger` read through the consumer group
`writebehind`. A read batch of one partition is written in one Postgres transaction (under
the partition's advisory lock, see apply.py); after COMMIT its ids are XACKed and XDELed in
one Lua call (every partition's call of a round in one pipeline), so XLEN is the
partition's backlog. A write that fails leaves its messages
pending: the partition then re-reads its own pending messages (id `0`) before anything new,
so per-wallet order holds and a batch is retried until it goes through. Messages left
pending by a dead consumer are taken over with XAUTOCLAIM once idle for `claim_idle_ms`,
and re-read in id order the same way. A replayed message is harmless: entries already
chained are skipped, rows are written only from newer versions.

Nothing is ever skipped: a message that cannot be decoded, or whose entries would leave a
gap in a wallet's chain, stops its partition (fail closed: logged, counted in
`obol.writebehind.failures`, retried with backoff) until it can be written.

If Redis loses its data under a running worker (a restart without AOF, a failover to an
empty replica, FLUSHALL), its consumer groups go too and reads answer NOGROUP: the worker
then creates the groups again, from the start of the (new) streams, logs a warning, counts
the recreated groups in `obol.writebehind.failures` (`reason` = `nogroup`) and goes on with
the next round, no backoff. What the lost streams held is `obol rebuild`'s business.

Reads: on a single Redis node one XREADGROUP covers all the worker's streams and blocks up
to `block_ms`. On Redis Cluster a command may only name keys of one slot, and every
partition's stream is in its own slot, so each stream gets its own non-blocking XREADGROUP,
all of them sent in one pipeline (one round trip and one connection per node, however many
partitions), and the worker sleeps `block_ms` when all are empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from obol_core.cancellation import raise_if_cancelling
from obol_core.redis import (
    LuaScript,
    RedisClient,
    ScriptCall,
    StreamMessage,
    is_nogroup,
    read_group,
    run_scripts,
)

from ..redis_backend.codec import STREAM_GROUP, decode_message, ledger_stream
from .apply import apply_messages

LAG_REFRESH_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 5.0
_ACK_CHUNK = 1000

# XACK then XDEL of the same ids, atomically: an acked message never lingers in the stream.
_ACK_SOURCE = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""

_log = structlog.get_logger("obol.writebehind")


@dataclass(frozen=True)
class PartitionLag:
    backlog: int  # messages not yet written (written ones are deleted from the stream)
    oldest_age_ms: int  # age of the oldest of them; 0 when there are none


@dataclass(frozen=True)
class StepResult:
    handled: int  # messages written and acknowledged
    failures: Mapping[int, BaseException] = field(default_factory=dict)  # partition -> error
    full: bool = False  # a partition gave a whole batch: more is waiting, read again at once


class WriteBehindError(Exception):
    """Some partitions could not be written (their messages stay pending)."""

    def __init__(self, failures: Mapping[int, BaseException]) -> None:
        detail = "; ".join(f"partition {p}: {err}" for p, err in sorted(failures.items()))
        super().__init__(f"write-behind failed: {detail}")
        self.failures = dict(failures)


class WriteBehind:
    def __init__(
        self,
        redis: RedisClient,
        pool: asyncpg.Pool[asyncpg.Record],
        partitions: Sequence[int],
        consumer: str,
        batch: int = 500,
        block_ms: int = 200,
        claim_idle_ms: int = 30_000,
        linger_ms: int = 50,
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._partitions = partitions
        self._consumer = consumer
        self._batch = batch
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._linger_seconds = linger_ms / 1000
        self._keys = {ledger_stream(p): p for p in partitions}
        # Partitions whose own pending messages must be (re)read first: all of them at
        # start, since a previous run of this consumer may have died before acking.
        self._retry: set[int] = set(partitions)
        self._ack_script = LuaScript(redis, _ACK_SOURCE)
        self._ready = False
        self._next_claim = 0.0
        self._next_lag = 0.0
        self.last_lag: dict[int, PartitionLag] = {}
        _workers.add(self)

    async def setup(self) -> list[int]:
        """Create the consumer groups (from the start of each stream) if missing; returns
        the partitions whose group it created."""
        if self._ready:
            return []
        created: list[int] = []
        for key, partition in self._keys.items():
            try:
                await self._redis.xgroup_create(key, STREAM_GROUP, id="0", mkstream=True)
                created.append(partition)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        self._ready = True
        return created

    async def run_until(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; the batch in flight is finished (written and acked)."""
        await self.setup()
        backoff = 0.0
        while not stop.is_set():
            raise_if_cancelling()  # also when a handler inside the round swallowed it
            started = time.monotonic()
            try:
                result = await self.step()
            except Exception:
                raise_if_cancelling()
                _log.exception("write-behind step failed", consumer=self._consumer)
                result = None
            if result is not None and not result.failures:
                backoff = 0.0
                if not result.full:
                    await self._linger(stop, started)
                continue
            backoff = min(max(2 * backoff, 0.1), MAX_BACKOFF_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
        _log.info("write-behind stopped", consumer=self._consumer)

    async def _linger(self, stop: asyncio.Event, round_started: float) -> None:
        """Let a round that was not full last at least `linger_ms`, so that under light or
        moderate load messages are written in batches (one Postgres commit and one Redis
        acknowledgement per round) instead of one round per message the moment it lands:
        a few ms of lag buy a far smaller share of the CPU and of both databases' fsyncs."""
        wait = round_started + self._linger_seconds - time.monotonic()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def drain(self) -> int:
        """Write everything readable now (for tests and `obol rebuild`); returns how many
        messages were written. WriteBehindError if a partition fails."""
        await self.setup()
        total = 0
        while True:
            read_new = not self._retry  # else this round re-reads pending messages
            result = await self.step(block=False)
            if result.failures:
                raise WriteBehindError(result.failures)
            total += result.handled
            # Done once a round read new messages and found none (a round that met a lost
            # group read nothing: it left every partition's pending messages to re-read).
            if result.handled == 0 and read_new and not self._retry:
                return total

    async def step(self, *, block: bool = True) -> StepResult:
        """One round: claim idle pending messages if due, read, write, acknowledge."""
        await self.setup()
        try:
            if time.monotonic() >= self._next_claim:
                await self._claim()
                self._next_claim = time.monotonic() + self._claim_idle_ms / 2000
            batches = await self._read(block)
        except ResponseError as err:
            if not is_nogroup(err):
                raise
            await self._regroup(err)
            return StepResult(0)
        full = any(len(messages) >= self._batch for messages in batches.values())
        failures: dict[int, BaseException] = {}
        handled = 0
        if len(batches) > 1:
            # The common case under load: every partition's batch in ONE transaction (one
            # commit instead of one per partition). If it fails, fall back to partition by
            # partition below, so one bad partition cannot hold up the others.
            try:
                handled = await self._write_together(batches)
                batches = {}
            except Exception as err:
                _log.warning(
                    "combined write failed; writing partition by partition",
                    error=f"{type(err).__name__}: {err}",
                )

        async def write(partition: int, messages: list[StreamMessage]) -> int:
            # Partitions are independent (each its own transaction and advisory lock), so
            # they are written side by side on separate pool connections.
            try:
                return await self._write(partition, messages)
            except Exception as err:
                failures[partition] = err
                self._retry.add(partition)
                _failures.add(1, {"partition": str(partition)})
                _log.error(
                    "write-behind batch failed; its messages stay pending and are retried",
                    partition=partition,
                    messages=len(messages),
                    error=f"{type(err).__name__}: {err}",
                )
                return 0

        handled += sum(
            await asyncio.gather(*(write(p, messages) for p, messages in batches.items()))
        )
        if time.monotonic() >= self._next_lag:
            await self.lag()
        return StepResult(handled, failures, full)

    async def _regroup(self, err: ResponseError) -> None:
        """A group is gone: Redis lost its data. Create the groups again from id 0: the
        streams are new, so everything in them is unwritten (a message read before the loss
        and written since is acknowledged harmlessly: XACK of a missing group answers 0)."""
        self._ready = False
        created = await self.setup()
        self._retry.update(self._keys.values())  # next round: a (harmless) pending read first
        for partition in created:
            _failures.add(1, {"partition": str(partition), "reason": "nogroup"})
        _log.warning(
            "consumer group lost (did Redis lose its data?); recreated from the stream start",
            partitions=created,
            consumer=self._consumer,
            error=str(err),
        )

    async def lag(self) -> dict[int, PartitionLag]:
        """Backlog and age of the oldest unwritten message, per partition."""
        pipe = self._redis.pipeline(transaction=False)
        for key in self._keys:
            pipe.xlen(key)
            pipe.xrange(key, "-", "+", count=1)
        replies = await pipe.execute()
        now_ms = time.time_ns() // 1_000_000
        lags: dict[int, PartitionLag] = {}
        for index, partition in enumerate(self._keys.values()):
            backlog, first = replies[2 * index], replies[2 * index + 1]
            age = now_ms - int(first[0][0].split(b"-")[0]) if first else 0
            lags[partition] = PartitionLag(int(backlog), max(age, 0))
        self.last_lag = lags
        self._next_lag = time.monotonic() + LAG_REFRESH_SECONDS
        return lags

    async def _claim(self) -> None:
        """Take over messages another consumer left pending for `claim_idle_ms`: every
        partition's XAUTOCLAIM in one pipeline, again for those with more to scan."""
        starts: dict[str, bytes | str] = dict.fromkeys(self._keys, "0-0")
        while starts:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, start in starts.items():
                    pipe.xautoclaim(
                        key,
                        STREAM_GROUP,
                        self._consumer,
                        min_idle_time=self._claim_idle_ms,
                        start_id=start,
                        count=self._batch,
                    )
                replies: list[Any] = await pipe.execute()
            scanning: dict[str, bytes | str] = {}
            for key, reply in zip(starts, replies, strict=True):
                if reply[1]:
                    self._retry.add(self._keys[key])
                    _log.warning(
                        "took over idle pending messages",
                        partition=self._keys[key],
                        messages=len(reply[1]),
                        consumer=self._consumer,
                    )
                if reply[0] not in (b"0-0", "0-0"):
                    scanning[key] = reply[0]
            starts = scanning

    async def _read(self, block: bool) -> dict[int, list[StreamMessage]]:
        streams = {key: "0" if p in self._retry else ">" for key, p in self._keys.items()}
        cluster = isinstance(self._redis, RedisCluster)
        blocking = block and not self._retry and not cluster
        try:
            replies = await read_group(
                self._redis,
                STREAM_GROUP,
                self._consumer,
                streams,
                count=self._batch,
                block_ms=self._block_ms if blocking else None,
            )
        except Exception:
            # A read that failed midway (e.g. a client timeout) may still have delivered
            # messages to this consumer: re-read its pending messages first next time,
            # or their successors would meet a gap in the chain.
            self._retry.update(self._keys.values())
            raise
        batches = {self._keys[_text(key)]: messages for key, messages in replies}
        if block and cluster and not any(batches.values()):
            await asyncio.sleep(self._block_ms / 1000)  # a cluster read never blocks
        for partition in list(self._retry):
            if not batches.get(partition):
                self._retry.discard(partition)  # its pending messages are all written
        return {p: m for p, m in batches.items() if m}

    async def _write(self, partition: int, messages: list[StreamMessage]) -> int:
        decoded = [decode_message(fields) for _, fields in messages]
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await apply_messages(conn, [partition], decoded)
        await self._ack({partition: messages})
        _written.add(inserted, {"partition": str(partition)})
        return len(messages)

    async def _write_together(self, batches: Mapping[int, list[StreamMessage]]) -> int:
        decoded = [
            decode_message(fields) for messages in batches.values() for _, fields in messages
        ]
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await apply_messages(conn, batches.keys(), decoded)
        # Acknowledged only after the commit; a crash in between replays harmlessly.
        await self._ack(batches)
        _written.add(inserted, {"partition": "all"})
        return sum(len(messages) for messages in batches.values())

    async def _ack(self, batches: Mapping[int, list[StreamMessage]]) -> None:
        """XACK and XDEL every written message: all partitions in one round trip."""
        calls: list[ScriptCall] = []
        for partition, messages in batches.items():
            key = ledger_stream(partition)
            ids = [message_id for message_id, _ in messages]
            for start in range(0, len(ids), _ACK_CHUNK):
                chunk = ids[start : start + _ACK_CHUNK]
                calls.append((self._ack_script, [key], [STREAM_GROUP, *chunk]))
        await run_scripts(self._redis, calls)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ---- metrics: one set of instruments per process, observing every live worker ----

_workers: weakref.WeakSet[WriteBehind] = weakref.WeakSet()


def _observe(attribute: str) -> Any:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        for worker in list(_workers):
            for partition, lag in worker.last_lag.items():
                yield Observation(getattr(lag, attribute), {"partition": str(partition)})

    return observe


_meter = metrics.get_meter("obol.writebehind")
_meter.create_observable_gauge(
    "obol.writebehind.lag",
    callbacks=[_observe("oldest_age_ms")],
    unit="ms",
    description="Age of the oldest ledger stream message not yet written to Postgres",
)
_meter.create_observable_gauge(
    "obol.writebehind.backlog",
    callbacks=[_observe("backlog")],
    unit="{message}",
    description="Ledger stream messages not yet written to Postgres",
)
_written = _meter.create_counter(
    "obol.writebehind.entries", unit="{entry}", description="Ledger entries written"
)
_failures = _meter.create_counter(
    "obol.writebehind.failures",
    unit="{batch}",
    description="Batches that failed to write; with reason=nogroup, consumer groups recreated",
)

"""The write-behind worker against real Redis streams and a real Postgres.

Messages are XADDed by hand in the documented stream format, as the Lua scripts write them.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from obol_core.redis import RedisClient
from obol_wallet import ledger_queries
from obol_wallet.ledger_store import ChainGap
from obol_wallet.partitions import partition_of
from obol_wallet.redis_backend.codec import ledger_stream
from obol_wallet.writebehind import STREAM_GROUP, WriteBehind, WriteBehindError
from obol_wallet.writebehind.worker import StepResult

from ..postgres.support import (
    DOLLAR,
    PARTITIONS,
    USD,
    entry_json,
    grant_json,
    hold_json,
    message,
    new_wallet,
    wallet_json,
)

ALL = range(PARTITIONS)


def worker(
    redis: RedisClient, pool: asyncpg.Pool, consumer: str = "wb-0", **options: int
) -> WriteBehind:
    return WriteBehind(redis, pool, ALL, consumer, **options)


def key_of(wallet_id: str) -> str:
    return ledger_stream(partition_of(wallet_id, PARTITIONS))


def top_up(wallet_id: str, n: int = 1, amount: int = 5 * DOLLAR) -> dict[str, str]:
    grant_id = f"grt_{wallet_id}_{n}"
    return message(
        "grant",
        wallet_id,
        rid=f"top-{n}",
        entries=[
            entry_json(
                f"txn_{wallet_id}_{n}",
                n,
                "top_up",
                [
                    (f"topup_clearing:{USD}", USD, -amount),
                    (f"wallet:{wallet_id}:grant:{grant_id}", USD, amount),
                ],
                rid=f"top-{n}",
                memo={"grant_id": grant_id},
            )
        ],
        grants=[grant_json(grant_id, amount, amount, version=n)],
        wallet=wallet_json(active=n * amount, held=0, seq=n, version=n),
    )


async def xadd(redis: RedisClient, wallet_id: str, fields: dict[str, str]) -> bytes:
    message_id: bytes = await redis.xadd(key_of(wallet_id), fields)  # type: ignore[arg-type]
    return message_id


async def pending(redis: RedisClient, wallet_id: str) -> int:
    summary = await redis.xpending(key_of(wallet_id), STREAM_GROUP)
    return int(summary["pending"])


async def test_a_batch_lands_in_one_go_and_the_stream_is_emptied(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    first, second = await new_wallet(pool), await new_wallet(pool)
    hold_id = f"hld_{first}"
    await xadd(redis, first, top_up(first))
    await xadd(
        redis,
        first,
        message(
            "authorize",
            first,
            rid="auth-1",
            entries=[entry_json("txn_hold", 2, "hold", rid="auth-1", memo={"hold_id": hold_id})],
            holds=[hold_json(hold_id, DOLLAR, "open", version=1, rid="auth-1")],
            wallet=wallet_json(active=5 * DOLLAR, held=DOLLAR, seq=2, version=2),
            result='{"hold":"x"}',
        ),
    )
    await xadd(redis, second, top_up(second))

    assert await worker(redis, pool).drain() == 3

    rows = await pool.fetch("SELECT wallet_id, seq, kind FROM ledger_entries ORDER BY 1, 2")
    assert sorted((r["wallet_id"], r["seq"], r["kind"]) for r in rows) == sorted(
        [(first, 1, "top_up"), (first, 2, "hold"), (second, 1, "top_up")]
    )
    wallet = await pool.fetchrow("SELECT * FROM wallets WHERE wallet_id = $1", first)
    assert (wallet["active"], wallet["held"], wallet["seq"], wallet["version"]) == (
        5 * DOLLAR,
        DOLLAR,
        2,
        2,
    )
    assert wallet["chain_seq"] == 2
    hold = await pool.fetchrow("SELECT state, authorized FROM holds WHERE hold_id = $1", hold_id)
    assert (hold["state"], hold["authorized"]) == ("open", DOLLAR)
    request = await pool.fetchrow(
        "SELECT request_hash, result FROM wallet_requests WHERE wallet_id = $1 AND request_id = $2",
        first,
        "auth-1",
    )
    assert (request["request_hash"], request["result"]) == ("hash-auth-1", '{"hold":"x"}')
    assert await redis.xlen(key_of(first)) == 0
    assert await pending(redis, first) == 0
    for wallet_id in (first, second):
        assert (await ledger_queries.verify_chain(pool, wallet_id)).valid


async def test_a_replayed_message_changes_nothing(redis: RedisClient, pool: asyncpg.Pool) -> None:
    wallet_id = await new_wallet(pool)
    fields = top_up(wallet_id)
    await xadd(redis, wallet_id, fields)
    await worker(redis, pool).drain()
    await xadd(redis, wallet_id, fields)  # the same message again (a redelivery)
    assert await worker(redis, pool).drain() == 1
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 1
    assert await pool.fetchval("SELECT count(*) FROM ledger_lines") == 2
    assert await pool.fetchval("SELECT count(*) FROM wallet_requests") == 1
    assert (await ledger_queries.verify_chain(pool, wallet_id)).valid


async def test_an_older_state_never_overwrites_a_newer_row(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    wallet_id = await new_wallet(pool)
    grant_id, hold_id = f"grt_{wallet_id}_1", f"hld_{wallet_id}"
    newer = message(
        "capture",
        wallet_id,
        grants=[grant_json(grant_id, 5 * DOLLAR, 2 * DOLLAR, version=7)],
        holds=[hold_json(hold_id, DOLLAR, "captured", version=3, captured=DOLLAR)],
        wallet=wallet_json(active=2 * DOLLAR, held=0, seq=0, version=9),
    )
    older = message(
        "authorize",
        wallet_id,
        grants=[grant_json(grant_id, 5 * DOLLAR, 5 * DOLLAR, version=4)],
        holds=[hold_json(hold_id, DOLLAR, "open", version=2)],
        wallet=wallet_json(active=5 * DOLLAR, held=DOLLAR, seq=0, version=8),
    )
    await xadd(redis, wallet_id, newer)
    await worker(redis, pool).drain()
    await xadd(redis, wallet_id, older)  # arrives late
    await worker(redis, pool).drain()
    grant = await pool.fetchrow(
        "SELECT remaining, version FROM grants WHERE grant_id = $1", grant_id
    )
    assert (grant["remaining"], grant["version"]) == (2 * DOLLAR, 7)
    hold = await pool.fetchrow("SELECT state, version FROM holds WHERE hold_id = $1", hold_id)
    assert (hold["state"], hold["version"]) == ("captured", 3)
    wallet = await pool.fetchrow(
        "SELECT active, held, version FROM wallets WHERE wallet_id = $1", wallet_id
    )
    assert tuple(wallet) == (2 * DOLLAR, 0, 9)


async def test_within_one_batch_the_newest_version_wins(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    wallet_id = await new_wallet(pool)
    grant_id = f"grt_{wallet_id}_1"
    for version, remaining in ((5, 1), (6, 2), (3, 9)):
        await xadd(
            redis,
            wallet_id,
            message(
                "refund",
                wallet_id,
                grants=[grant_json(grant_id, 10, remaining, version=version)],
                wallet=wallet_json(active=remaining, held=0, seq=0, version=version),
            ),
        )
    await worker(redis, pool).drain()
    assert await pool.fetchval("SELECT remaining FROM grants WHERE grant_id = $1", grant_id) == 2


class CrashBeforeAck(WriteBehind):
    """A worker that dies between COMMIT and XACK."""

    async def _ack(self, partition: int, ids: list[bytes]) -> None:
        raise ConnectionError("killed before XACK")


async def test_a_crash_between_commit_and_ack_replays_without_duplicates(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    wallet_id = await new_wallet(pool)
    await xadd(redis, wallet_id, top_up(wallet_id, 1))
    await xadd(redis, wallet_id, top_up(wallet_id, 2))
    with pytest.raises(WriteBehindError):
        await CrashBeforeAck(redis, pool, ALL, "wb-0").drain()
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 2  # committed
    assert await pending(redis, wallet_id) == 2  # but not acknowledged

    # The restarted worker (same consumer name) re-reads its pending messages first.
    assert await worker(redis, pool, "wb-0").drain() == 2
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 2
    assert await pending(redis, wallet_id) == 0
    assert await redis.xlen(key_of(wallet_id)) == 0
    assert (await ledger_queries.verify_chain(pool, wallet_id)).valid


async def test_a_failed_postgres_write_acks_nothing_and_is_retried(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    wallet_id = await new_wallet(pool)
    await xadd(redis, wallet_id, top_up(wallet_id, 1))
    await pool.execute("ALTER TABLE ledger_lines ADD CONSTRAINT no_lines CHECK (amount = 0)")
    running = worker(redis, pool)
    with pytest.raises(WriteBehindError):
        await running.drain()
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 0  # rolled back
    assert await pending(redis, wallet_id) == 1
    assert await redis.xlen(key_of(wallet_id)) == 1

    await xadd(redis, wallet_id, top_up(wallet_id, 2))  # newer messages wait behind it
    await pool.execute("ALTER TABLE ledger_lines DROP CONSTRAINT no_lines")
    assert await running.drain() == 2
    seqs = await pool.fetch("SELECT seq FROM ledger_entries ORDER BY seq")
    assert [r["seq"] for r in seqs] == [1, 2]
    assert await redis.xlen(key_of(wallet_id)) == 0


async def test_a_dead_consumers_pending_messages_are_claimed(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    wallet_id = await new_wallet(pool)
    await worker(redis, pool).setup()
    await xadd(redis, wallet_id, top_up(wallet_id, 1))
    # A consumer reads the message and dies without writing or acknowledging it.
    delivered = await redis.xreadgroup(STREAM_GROUP, "wb-dead", {key_of(wallet_id): ">"})
    assert delivered
    await xadd(redis, wallet_id, top_up(wallet_id, 2))

    live = worker(redis, pool, "wb-live", claim_idle_ms=300)
    with pytest.raises(WriteBehindError) as gap:  # seq 2 cannot be chained before seq 1
        await live.drain()
    assert isinstance(gap.value.failures[partition_of(wallet_id, PARTITIONS)], ChainGap)
    await asyncio.sleep(0.35)
    assert await live.drain() == 2
    assert await pool.fetchval("SELECT chain_seq FROM wallets WHERE wallet_id = $1", wallet_id) == 2
    assert await pending(redis, wallet_id) == 0


async def test_a_gap_in_a_chain_stops_the_partition(redis: RedisClient, pool: asyncpg.Pool) -> None:
    wallet_id = await new_wallet(pool)
    await xadd(redis, wallet_id, top_up(wallet_id, 2))  # seq 1 never arrives
    with pytest.raises(WriteBehindError, match="expected 1"):
        await worker(redis, pool).drain()
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 0
    assert await pending(redis, wallet_id) == 1


async def test_lag_reports_backlog_and_age(redis: RedisClient, pool: asyncpg.Pool) -> None:
    wallet_id = await new_wallet(pool)
    running = worker(redis, pool)
    await running.setup()
    await xadd(redis, wallet_id, top_up(wallet_id, 1))
    await xadd(redis, wallet_id, top_up(wallet_id, 2))
    await asyncio.sleep(0.02)
    lag = (await running.lag())[partition_of(wallet_id, PARTITIONS)]
    assert lag.backlog == 2
    assert lag.oldest_age_ms >= 20
    await running.drain()
    lag = (await running.lag())[partition_of(wallet_id, PARTITIONS)]
    assert (lag.backlog, lag.oldest_age_ms) == (0, 0)


async def test_run_until_writes_as_messages_arrive_and_stops_cleanly(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    wallet_id = await new_wallet(pool)
    stop = asyncio.Event()
    task = asyncio.create_task(worker(redis, pool, block_ms=50).run_until(stop))
    await xadd(redis, wallet_id, top_up(wallet_id, 1))
    for _ in range(100):
        if await pool.fetchval("SELECT count(*) FROM ledger_entries"):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 1
    assert await redis.xlen(key_of(wallet_id)) == 0


class CountingWorker(WriteBehind):
    """Counts the rounds that wrote something (one Postgres transaction each)."""

    writing_rounds = 0

    async def step(self, *, block: bool = True) -> StepResult:
        result = await super().step(block=block)
        if result.handled:
            self.writing_rounds += 1
        return result


async def test_messages_trickling_in_are_written_in_few_rounds_when_lingering(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    wallet_id = await new_wallet(pool)
    stop = asyncio.Event()
    lingering = CountingWorker(redis, pool, ALL, "wb-0", block_ms=50, linger_ms=300)
    task = asyncio.create_task(lingering.run_until(stop))
    for n in range(1, 31):  # 30 messages over about 0.3 s
        await xadd(redis, wallet_id, top_up(wallet_id, n))
        await asyncio.sleep(0.01)
    for _ in range(200):
        if await pool.fetchval("SELECT count(*) FROM ledger_entries") == 30:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 30
    # A round that is not full lasts at least 300 ms: the first message is written at
    # once, the rest wait for the next round or two (without lingering: about 30 rounds).
    assert 1 <= lingering.writing_rounds <= 4


async def test_lines_sum_to_zero_per_asset(redis: RedisClient, pool: asyncpg.Pool) -> None:
    wallet_id = await new_wallet(pool)
    for n in (1, 2, 3):
        await xadd(redis, wallet_id, top_up(wallet_id, n, amount=n * DOLLAR))
    await worker(redis, pool).drain()
    sums = await pool.fetch("SELECT asset_code, sum(amount) AS s FROM ledger_lines GROUP BY 1")
    assert [(r["asset_code"], r["s"]) for r in sums] == [(USD, 0)]


# ---- Redis lost its data under a running worker: its consumer groups are gone ----


async def _written(pool: asyncpg.Pool, count: int) -> None:
    """Wait (at most 5 s) until Postgres holds `count` ledger entries."""
    for _ in range(250):
        if await pool.fetchval("SELECT count(*) FROM ledger_entries") >= count:
            return
        await asyncio.sleep(0.02)


async def test_a_running_worker_recreates_its_groups_when_redis_lost_its_data(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    wallet_id = await new_wallet(pool)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(worker(redis, pool, block_ms=50).run_until(stop))
        await xadd(redis, wallet_id, top_up(wallet_id, 1))
        await _written(pool, 1)
        await redis.flushdb()  # the test's own db: every stream and group is gone
        await xadd(redis, wallet_id, top_up(wallet_id, 2))  # the wallet's ledger goes on
        await xadd(redis, wallet_id, top_up(wallet_id, 3))
        await _written(pool, 3)
        stop.set()
        await asyncio.wait_for(task, 2)

    seqs = await pool.fetch("SELECT seq FROM ledger_entries ORDER BY seq")
    assert [r["seq"] for r in seqs] == [1, 2, 3]  # each once, none skipped
    assert await pool.fetchval("SELECT count(*) FROM ledger_lines") == 6
    assert await pool.fetchval("SELECT count(*) FROM wallet_requests") == 3
    assert (await ledger_queries.verify_chain(pool, wallet_id)).valid
    assert await redis.xlen(key_of(wallet_id)) == 0
    assert await pending(redis, wallet_id) == 0
    lost = [line for line in logs if "consumer group lost" in line["event"]]
    assert [(line["log_level"], line["partitions"]) for line in lost] == [("warning", list(ALL))]
    assert not [line for line in logs if line["log_level"] in ("error", "critical")]


async def test_a_lost_stream_gets_its_group_back_without_a_failed_round(
    redis: RedisClient, pool: asyncpg.Pool
) -> None:
    first = await new_wallet(pool)
    second = await new_wallet(pool)
    while key_of(second) == key_of(first):
        second = await new_wallet(pool)
    running = worker(redis, pool)
    await xadd(redis, first, top_up(first, 1))
    await xadd(redis, second, top_up(second, 1))
    assert await running.drain() == 2

    await redis.delete(key_of(first))  # this stream and its group are gone, not the others
    await xadd(redis, first, top_up(first, 2))
    await xadd(redis, second, top_up(second, 2))
    assert await running.drain() == 2  # the round that met NOGROUP did not end the drain

    await redis.delete(key_of(first))  # once more, a round at a time
    await xadd(redis, first, top_up(first, 3))
    # The round that meets NOGROUP recreates the group: no failure, so no backoff.
    assert await running.step(block=False) == StepResult(0)
    assert await running.drain() == 1
    for wallet_id, last in ((first, 3), (second, 2)):
        seqs = await pool.fetch(
            "SELECT seq FROM ledger_entries WHERE wallet_id = $1 ORDER BY seq", wallet_id
        )
        assert [r["seq"] for r in seqs] == list(range(1, last + 1))
        assert (await ledger_queries.verify_chain(pool, wallet_id)).valid
        assert await redis.xlen(key_of(wallet_id)) == 0
    groups = await redis.xinfo_groups(key_of(first))
    assert [(g["name"], g["pending"]) for g in groups] == [(STREAM_GROUP.encode(), 0)]


class FailedRounds(WriteBehind):
    """Notes the Redis errors its rounds raise."""

    errors: tuple[str, ...] = ()

    async def step(self, *, block: bool = True) -> StepResult:
        try:
            return await super().step(block=block)
        except ResponseError as err:
            self.errors += (str(err),)
            raise


async def test_other_redis_errors_still_back_off(redis: RedisClient, pool: asyncpg.Pool) -> None:
    wallet_id = await new_wallet(pool)
    running = FailedRounds(redis, pool, ALL, "wb-0", block_ms=50)
    await running.setup()
    key = key_of(wallet_id)
    await redis.delete(key)
    await redis.set(key, "not a stream")  # every read now answers WRONGTYPE
    stop = asyncio.Event()
    task = asyncio.create_task(running.run_until(stop))
    await asyncio.sleep(1.0)
    # Backing off 0.1, 0.2, 0.4, 0.8 s: a handful of rounds (about 20 without backoff).
    assert 1 <= len(running.errors) <= 6
    assert all("WRONGTYPE" in error for error in running.errors)
    assert await redis.type(key) == b"string"  # no group was made over it

    await redis.delete(key)  # repaired: the next read answers NOGROUP, the group comes back
    await xadd(redis, wallet_id, top_up(wallet_id, 1))
    await _written(pool, 1)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 1
    assert await redis.xlen(key) == 0

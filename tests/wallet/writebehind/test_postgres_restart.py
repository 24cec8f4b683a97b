"""A running write-behind worker rides out a Postgres restart: while Postgres is down its
rounds fail and back off (nothing acknowledged, the worker keeps running), and once it is
back every message is written once, in order, and the streams empty."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from structlog.testing import capture_logs

from obol_cli.embedded import EmbeddedPostgres
from obol_core.redis import RedisClient

from ..postgres.support import migrated_pool, new_wallet
from .test_worker import key_of, top_up, worker

WAIT_SECONDS = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


async def test_a_running_worker_writes_everything_once_after_postgres_restarts(
    private_postgres: EmbeddedPostgres, redis: RedisClient
) -> None:
    dsn = private_postgres.create_database("writebehind_restart")
    async with migrated_pool(dsn) as pool:
        wallet_id = await new_wallet(pool)
        stop = asyncio.Event()
        running = asyncio.create_task(worker(redis, pool, block_ms=50).run_until(stop))

        async def entries() -> int:
            count: int = await pool.fetchval("SELECT count(*) FROM ledger_entries")
            return count

        await redis.xadd(key_of(wallet_id), top_up(wallet_id, 1))  # type: ignore[arg-type]
        await eventually(lambda: _equals(entries(), 1), "the first entry written")

        private_postgres.stop()
        with capture_logs() as logs:
            for n in (2, 3):
                await redis.xadd(key_of(wallet_id), top_up(wallet_id, n))  # type: ignore[arg-type]
            await asyncio.sleep(1.5)  # failing rounds, backing off
        assert any(e["event"].startswith("write-behind batch failed") for e in logs)
        assert not running.done()  # it does not die
        assert await redis.xlen(key_of(wallet_id)) == 2  # nothing acknowledged

        private_postgres.start()
        await eventually(lambda: _equals(entries(), 3), "the entries written after restart")
        stop.set()
        await asyncio.wait_for(running, 10)
        seqs = await pool.fetch("SELECT seq FROM ledger_entries ORDER BY seq")
        assert [r["seq"] for r in seqs] == [1, 2, 3]
        assert await redis.xlen(key_of(wallet_id)) == 0


async def _equals(value: Awaitable[int], expected: int) -> bool:
    try:
        return await value == expected
    except (OSError, ConnectionError):
        return False

"""`python -m obol_wallet.writebehind` as a real process: health, work, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import asyncpg
import pytest

from obol_cli.embedded import free_port
from obol_cli.health import grpc_serving
from obol_core.redis import RedisClient
from obol_wallet.partitions import partition_of
from obol_wallet.redis_backend.codec import ledger_stream
from obol_wallet.writebehind.__main__ import shard_partitions

from ..postgres.support import PARTITIONS, new_wallet
from .conftest import REDIS_DB
from .test_worker import top_up


def test_shards_split_the_partitions_into_contiguous_slices() -> None:
    slices = [shard_partitions(10, 3, i) for i in range(3)]
    assert slices == [range(0, 3), range(3, 6), range(6, 10)]
    with pytest.raises(Exception, match="shard index 3"):
        shard_partitions(10, 3, 3)


async def test_the_worker_process_serves_health_writes_and_stops_on_sigterm(
    redis: RedisClient, pool: asyncpg.Pool, fresh_database: str, redis_url: str
) -> None:
    wallet_id = await new_wallet(pool)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database,
        "REDIS_URL": f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}",
        "OBOL_WALLET_PARTITIONS": str(PARTITIONS),
        "OBOL_WRITEBEHIND_CONSUMER": "writebehind-0",
        "OBOL_WRITEBEHIND_HEALTH_PORT": str(port),
        "OBOL_HOST": "127.0.0.1",
        "OBOL_WRITEBEHIND_BLOCK_MS": "50",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "obol_wallet.writebehind", env=env
    )
    try:
        for _ in range(200):
            if await asyncio.to_thread(grpc_serving, f"127.0.0.1:{port}"):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the worker never became ready")
        await redis.xadd(ledger_stream(partition_of(wallet_id, PARTITIONS)), top_up(wallet_id))  # type: ignore[arg-type]
        for _ in range(200):
            if await pool.fetchval("SELECT count(*) FROM ledger_entries"):
                break
            await asyncio.sleep(0.05)
        assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 1
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

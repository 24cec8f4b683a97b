"""kill -9 of the write-behind worker in the middle of a sustained load, then a restart
under the same consumer name: every ledger entry the hot path produced reaches Postgres
exactly once, and the chains verify."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from obol_cli.embedded import free_port
from obol_core.ids import new_id, new_ulid
from obol_core.redis import RedisClient
from obol_wallet.ledger_queries import verify_chain
from obol_wallet.model import ChargeRequest, GrantKind, GrantRequest, Idempotency
from obol_wallet.partitions import grant_id_for
from obol_wallet.redis_backend import RedisBackend
from obol_wallet.redis_backend.codec import ledger_stream

from ..postgres.support import DOLLAR, PARTITIONS, START_MS, new_wallet
from .conftest import REDIS_DB

WALLETS = 20
CHARGES = 1500


def _idem() -> Idempotency:
    rid = new_ulid()
    return Idempotency(rid, rid)


@asynccontextmanager
async def _worker(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "obol_wallet.writebehind", env=env
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _backlog(redis: RedisClient) -> int:
    return sum([await redis.xlen(ledger_stream(p)) for p in range(PARTITIONS)])


async def test_kill_9_mid_batch_loses_nothing_and_duplicates_nothing(
    redis: RedisClient, pool: asyncpg.Pool, fresh_database: str, redis_url: str
) -> None:
    backend = RedisBackend(redis, partitions=PARTITIONS)
    wallet_ids = [await new_wallet(pool) for _ in range(WALLETS)]
    produced: list[str] = []
    for wallet_id in wallet_ids:
        await backend.open_wallet(wallet_id, "USD", 0, START_MS)
        granted = await backend.grant(
            GrantRequest(
                idem=_idem(),
                wallet_id=wallet_id,
                grant_id=grant_id_for(wallet_id, new_ulid()),
                entry_id=new_id("txn"),
                kind=GrantKind.PURCHASED,
                amount=100 * DOLLAR,
                priority=100,
                effective_ms=START_MS,
                expires_ms=0,
                now_ms=START_MS,
            )
        )
        produced.extend(granted.entry_ids)
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database,
        "REDIS_URL": f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}",
        "OBOL_WALLET_PARTITIONS": str(PARTITIONS),
        "OBOL_WRITEBEHIND_CONSUMER": "writebehind-0",
        "OBOL_WRITEBEHIND_HEALTH_PORT": str(free_port()),
        "OBOL_HOST": "127.0.0.1",
        "OBOL_WRITEBEHIND_BATCH": "25",
        "OBOL_WRITEBEHIND_BLOCK_MS": "20",
        "OBOL_WRITEBEHIND_CLAIM_IDLE_MS": "200",
    }

    async def charge(index: int) -> None:
        result = await backend.charge(
            ChargeRequest(
                idem=_idem(),
                wallet_id=wallet_ids[index % WALLETS],
                entry_id=new_id("txn"),
                amount=1000 + index,
                now_ms=START_MS + index,
            )
        )
        produced.extend(result.entry_ids)

    async with _worker(env) as first:
        for index in range(CHARGES // 2):
            await charge(index)
        first.send_signal(signal.SIGKILL)  # mid-stream: batches in flight, some unacked
        await first.wait()
    for index in range(CHARGES // 2, CHARGES):
        await charge(index)
    async with _worker(env):
        for _ in range(600):
            written = await pool.fetchval("SELECT count(*) FROM ledger_entries")
            if written >= len(produced) and await _backlog(redis) == 0:
                break
            await asyncio.sleep(0.05)

    rows = await pool.fetch("SELECT entry_id FROM ledger_entries")
    in_postgres = [row["entry_id"] for row in rows]
    assert len(in_postgres) == len(set(in_postgres))  # duplicated: none
    assert set(produced) <= set(in_postgres)  # lost: none
    assert len(in_postgres) == len(produced)  # nothing extra either
    for wallet_id in wallet_ids:
        assert (await verify_chain(pool, wallet_id)).valid
    total = await pool.fetchval("SELECT coalesce(sum(amount), 0) FROM ledger_lines")
    assert total == 0

"""End to end on the Redis backend: Lua scripts -> stream -> write-behind -> Postgres, then
the ledger tools (`obol verify`, `obol reconcile`, `obol rebuild`) as real processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import pytest_asyncio
from infra.cli import run_obol

from obol_core.redis import RedisClient
from obol_wallet import ledger_queries
from obol_wallet.errors import WalletNotHydrated
from obol_wallet.model import Balance, CostRecord
from obol_wallet.reconcile import reconcile
from obol_wallet.redis_backend import RedisBackend
from obol_wallet.writebehind import WriteBehind

from ..postgres import ops
from ..postgres.support import DOLLAR, PARTITIONS, START_MS, USD, new_wallet
from .conftest import REDIS_DB


@dataclass
class Setup:
    pool: asyncpg.Pool
    redis: RedisClient
    backend: RedisBackend
    worker: WriteBehind
    env: dict[str, str]

    async def wallet(self, funds: int) -> str:
        wallet_id = await new_wallet(self.pool)
        await self.backend.open_wallet(wallet_id, USD, 0, START_MS)
        await self.backend.grant(ops.grant(wallet_id, funds))
        return wallet_id

    async def obol(self, *args: str) -> tuple[int, str]:
        return await run_obol(self.env, *args)


@pytest_asyncio.fixture
async def setup(
    pool: asyncpg.Pool, redis: RedisClient, fresh_database: str, redis_url: str
) -> AsyncIterator[Setup]:
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database,
        "REDIS_URL": f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}",
        "OBOL_WALLET_PARTITIONS": str(PARTITIONS),
        "OBOL_WALLET_BACKEND": "redis",
    }
    backend = RedisBackend(redis, partitions=PARTITIONS)
    yield Setup(pool, redis, backend, WriteBehind(redis, pool, range(PARTITIONS), "wb-0"), env)


def money(balance: Balance) -> tuple[int, int, int, int, bool]:
    """A balance without its version: the tests' clock runs ahead of the wall clock that
    `obol rebuild` hydrates with, so Redis re-activates the grants once (a version bump)."""
    return (
        balance.active,
        balance.overdraft_used,
        balance.held,
        balance.overdraft_limit,
        balance.frozen,
    )


async def spend(setup: Setup, wallet_id: str) -> None:
    backend = setup.backend
    held = await backend.authorize(ops.authorize(wallet_id, 2 * DOLLAR))
    await backend.capture(
        ops.capture(wallet_id, held.hold_id, DOLLAR, cost=CostRecord(USD, DOLLAR // 10))
    )
    await backend.charge(ops.charge(wallet_id, DOLLAR // 2))
    await backend.authorize(ops.authorize(wallet_id, DOLLAR))  # left open


async def test_the_ledger_written_behind_matches_redis(setup: Setup) -> None:
    wallets = [await setup.wallet(5 * DOLLAR) for _ in range(3)]
    for wallet_id in wallets:
        await spend(setup, wallet_id)
    await setup.worker.drain()

    for wallet_id in wallets:
        verification = await ledger_queries.verify_chain(setup.pool, wallet_id)
        assert verification.valid, verification.problem
        assert verification.entries_checked == 5
        balance = await setup.backend.balance(wallet_id, START_MS)
        ledger = await ledger_queries.wallet_balances(setup.pool, wallet_id)
        assert ledger.total == balance.active + balance.overdraft_used
    report = await reconcile(setup.pool, hot=setup.backend, now_ms=START_MS)
    assert (report.wallets_checked, report.drift, report.lagging) == (3, [], [])
    assert await ledger_queries.unbalanced_assets(setup.pool) == {}

    code, output = await setup.obol("reconcile")
    assert code == 0, output
    assert "no drift" in output


async def test_reconcile_reports_drift(setup: Setup) -> None:
    wallet_id = await setup.wallet(5 * DOLLAR)
    await setup.worker.drain()
    await setup.pool.execute("UPDATE wallets SET held = 7 WHERE wallet_id = $1", wallet_id)
    code, output = await setup.obol("reconcile", "--wallet", wallet_id)
    assert code == 1
    assert f"DRIFT wallet {wallet_id}: held" in output


async def test_verify_names_the_first_tampered_entry(setup: Setup) -> None:
    wallet_id = await setup.wallet(5 * DOLLAR)
    await spend(setup, wallet_id)
    await setup.worker.drain()
    assert (await setup.obol("verify"))[0] == 0
    capture = await setup.pool.fetchrow(
        "SELECT entry_id, seq FROM ledger_entries WHERE wallet_id = $1 AND kind = 'capture'",
        wallet_id,
    )
    async with setup.pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE ledger_lines DISABLE TRIGGER ledger_lines_append_only")
        await conn.execute(
            "UPDATE ledger_lines SET amount = amount + 1 WHERE entry_id = $1 AND line_no = 1",
            capture["entry_id"],
        )
        await conn.execute("ALTER TABLE ledger_lines ENABLE TRIGGER ledger_lines_append_only")
    result = await ledger_queries.verify_chain(setup.pool, wallet_id)
    assert (result.valid, result.first_invalid_entry_id) == (False, capture["entry_id"])
    code, output = await setup.obol("verify", "--wallet", wallet_id)
    assert code == 1
    assert f"BROKEN at seq {capture['seq']} (entry {capture['entry_id']})" in output


async def test_rebuild_restores_a_lost_hot_state_and_the_chain_goes_on(setup: Setup) -> None:
    wallet_id = await setup.wallet(5 * DOLLAR)
    await spend(setup, wallet_id)
    before = await setup.backend.balance(wallet_id, START_MS)
    await setup.worker.drain()

    await setup.backend.drop_hot_state(wallet_id)
    with pytest.raises(WalletNotHydrated):
        await setup.backend.balance(wallet_id, START_MS)
    code, output = await setup.obol("rebuild")
    assert code == 0, output
    assert f"rebuilt {wallet_id}" in output
    assert money(await setup.backend.balance(wallet_id, START_MS)) == money(before)

    await setup.backend.charge(ops.charge(wallet_id, DOLLAR // 2))  # seq continues
    await setup.worker.drain()
    assert (await ledger_queries.verify_chain(setup.pool, wallet_id)).valid
    assert (await reconcile(setup.pool, hot=setup.backend, now_ms=START_MS)).drift == []


async def test_rebuild_refuses_while_the_stream_holds_unwritten_messages(setup: Setup) -> None:
    wallet_id = await setup.wallet(5 * DOLLAR)
    await spend(setup, wallet_id)  # nothing written behind yet
    expected = await setup.backend.balance(wallet_id, START_MS)
    await setup.backend.drop_hot_state(wallet_id)

    code, output = await setup.obol("rebuild")
    assert code == 1
    assert "unwritten messages" in output
    code, output = await setup.obol("rebuild", "--apply-stream")
    assert code == 0, output
    assert money(await setup.backend.balance(wallet_id, START_MS)) == money(expected)
    assert (await ledger_queries.verify_chain(setup.pool, wallet_id)).valid

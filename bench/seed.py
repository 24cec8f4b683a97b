"""Wallets to load, made outside the timed part, straight into the stores (no gRPC): the
customer and wallet rows in bulk (COPY), then through the backend the service runs
(`WalletBackend.open_wallet`, then a purchased grant no run can spend), as CreateWallet
and TopUp would. Each backend's wallets are made by its own load process, in parallel.

A hot wallet (everyone hits it) comes first, then the spread wallets.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping

from obol_core.ids import new_id, new_ulid
from obol_core.postgres import create_pool
from obol_core.redis import RedisClient, create_redis
from obol_wallet import assets
from obol_wallet.backend import WalletBackend
from obol_wallet.model import (
    DEFAULT_PRIORITY,
    NEVER_EXPIRES,
    GrantKind,
    GrantRequest,
    Idempotency,
)
from obol_wallet.partitions import grant_id_for, partition_of
from obol_wallet.schema import SCHEMA
from obol_wallet.settings import BackendKind, WalletSettings

from .config import ASSET, HOT_FUNDS, SPREAD_FUNDS
from .jobs import JobResult, SeedJob

CONCURRENCY = 64


def _usd() -> assets.Asset:
    return assets.Asset(
        asset_code=ASSET,
        kind=assets.AssetKind.CURRENCY,
        display_name="US dollar",
        decimals=9,
        display_decimals=2,
        symbol="$",
        exchange_rate=None,
        exchange_rounding=None,
    )


def _backend(settings: WalletSettings, pool: object, redis: RedisClient) -> WalletBackend:
    if settings.backend is BackendKind.POSTGRES:
        from obol_wallet.pg_backend import PostgresBackend

        return PostgresBackend(pool)  # type: ignore[arg-type]
    from obol_wallet.redis_backend import RedisBackend

    return RedisBackend(
        redis,
        partitions=settings.partitions,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        backlog_limit=settings.backlog_limit,
    )


async def fund(backend: WalletBackend, wallet_id: str, amount: int) -> None:
    """Open `wallet_id` in the backend and give it a purchased grant of `amount`."""
    now = time.time_ns() // 1_000_000
    await backend.open_wallet(wallet_id, ASSET, 0, now)
    request_id = f"bench-fund-{wallet_id}"
    await backend.grant(
        GrantRequest(
            idem=Idempotency(request_id, hashlib.sha256(request_id.encode()).hexdigest()),
            wallet_id=wallet_id,
            grant_id=grant_id_for(wallet_id, new_ulid()),
            entry_id=new_id("txn"),
            kind=GrantKind.PURCHASED,
            amount=amount,
            priority=DEFAULT_PRIORITY,
            effective_ms=now,
            expires_ms=NEVER_EXPIRES,
            now_ms=now,
        )
    )


async def seed_wallets(env: Mapping[str, str], count: int) -> list[str]:
    """[hot wallet, spread wallet 1..count], all funded."""
    settings = WalletSettings.from_env(env)
    pool = await create_pool(env["DATABASE_URL"], search_path=SCHEMA, max_size=8)
    redis = create_redis(env["REDIS_URL"])
    try:
        backend = _backend(settings, pool, redis)
        await assets.create_asset(pool, _usd())
        wallet_ids = [new_id("wal") for _ in range(count + 1)]
        customer_ids = [new_id("cus") for _ in wallet_ids]
        async with pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                "customers",
                schema_name=SCHEMA,
                columns=["customer_id", "external_id"],
                records=[(c, f"bench-{c}") for c in customer_ids],
            )
            await conn.copy_records_to_table(
                "wallets",
                schema_name=SCHEMA,
                columns=["wallet_id", "customer_id", "asset_code", "partition", "overdraft_limit"],
                records=[
                    (w, c, ASSET, partition_of(w, settings.partitions), 0)
                    for w, c in zip(wallet_ids, customer_ids, strict=True)
                ],
            )
        gate = asyncio.Semaphore(CONCURRENCY)

        async def fund_one(index: int, wallet_id: str) -> None:
            async with gate:
                await fund(backend, wallet_id, HOT_FUNDS if index == 0 else SPREAD_FUNDS)

        await asyncio.gather(*(fund_one(i, w) for i, w in enumerate(wallet_ids)))
        return wallet_ids
    finally:
        await redis.aclose()
        await pool.close()


async def run_seed(job: SeedJob) -> JobResult:
    return JobResult(ok=job.count + 1, wallet_ids=await seed_wallets(job.env, job.count))

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from obol_wallet.pg_backend import PostgresBackend

from .support import migrated_pool


@pytest_asyncio.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    async with migrated_pool(fresh_database, max_size=25) as created:
        yield created


@pytest_asyncio.fixture
async def backend(pool: asyncpg.Pool) -> PostgresBackend:
    return PostgresBackend(pool)

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from obol_core.redis import RedisClient, create_redis

from ..postgres.support import migrated_pool

# A database index of its own, flushed by every test, so that no other suite's keys meet
# these streams in the session's shared Redis.
REDIS_DB = 9


@pytest_asyncio.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    async with migrated_pool(fresh_database) as created:
        yield created


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client = create_redis(f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}")
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()

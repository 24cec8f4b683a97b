"""Fixtures for the Redis backend's tests: the session's real Redis, logical db 3.

The db is flushed once per session; every test makes its own wallets (fresh ULIDs), so
tests never see each other's state. Tests that look at partition-wide keys (sweep) use
their own db (`isolated`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from obol_core.redis import RedisClient, create_redis

from .helpers import Harness

DB = 3
ISOLATED_DB = 4
POOL_SIZE = 64


def _url(redis_url: str, db: int) -> str:
    base, _, _ = redis_url.rpartition("/")
    return f"{base}/{db}"


@pytest_asyncio.fixture(scope="session")
async def client(redis_url: str) -> AsyncIterator[RedisClient]:
    client = create_redis(_url(redis_url, DB))
    await client.flushdb()
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def h(client: RedisClient) -> Harness:
    harness = Harness(client)
    await harness.backend.load_scripts()
    return harness


@pytest_asyncio.fixture
async def isolated(redis_url: str) -> AsyncIterator[Harness]:
    """A harness on its own, flushed db (for partition-wide work lists)."""
    client = create_redis(_url(redis_url, ISOLATED_DB))
    await client.flushdb()
    yield Harness(client)
    await client.aclose()


@pytest_asyncio.fixture
async def pooled(redis_url: str) -> AsyncIterator[Harness]:
    """A harness whose client shares a pool of POOL_SIZE connections among concurrent
    callers (they wait for a free one), for races."""
    pool = BlockingConnectionPool.from_url(_url(redis_url, DB), max_connections=POOL_SIZE)
    client = Redis(connection_pool=pool)
    yield Harness(client)
    await client.aclose()
    await pool.disconnect()

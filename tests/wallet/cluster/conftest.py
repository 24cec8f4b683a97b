"""The wallet on a real Redis Cluster (the session's `redis_cluster`: three masters)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio.cluster import RedisCluster

from obol_cli.embedded import EmbeddedRedisCluster

from ..grpc.harness import WalletApi, wallet_api


@pytest_asyncio.fixture
async def cluster_api(
    fresh_database: str, redis_cluster: EmbeddedRedisCluster
) -> AsyncIterator[WalletApi]:
    """The in-process wallet service (the production gRPC bootstrap over the Redis backend)
    on the cluster, with a fresh Postgres database. The cluster is flushed first, so a
    write-behind drain sees only this test's streams.

    The clock starts at the wall clock (not the harness' fixed start) because `obol
    reconcile` and `obol rebuild`, run as processes, settle time with the wall clock: a
    hold made at a later fake time would look alive to them, one made much earlier would
    expire under them."""
    async with wallet_api("redis", fresh_database, redis_cluster.url) as running:
        assert isinstance(running.redis, RedisCluster)
        running.clock.now = time.time_ns() // 1_000_000
        yield running

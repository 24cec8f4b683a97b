"""obol_core.redis against a real Redis Cluster (the session's `redis_cluster`, three
masters): slot routing, LuaScript surviving NOSCRIPT on every master, readiness, and a
burst of concurrent commands waiting for connections instead of failing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import MaxConnectionsError

from obol_cli.embedded import EmbeddedRedisCluster
from obol_core.redis import LuaScript, RedisClient, check_redis, create_redis, is_cluster_url

INCR_BY = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
return {value, ARGV[2]}
"""


def _tags_on_every_master(cluster: EmbeddedRedisCluster) -> list[str]:
    """A hash tag served by each master, in master order."""
    found: dict[int, str] = {}
    for n in range(1000):
        slot = key_slot(f"{{t{n}}}".encode())
        for index, (first, last) in enumerate(cluster.slot_ranges()):
            if first <= slot <= last:
                found.setdefault(index, f"{{t{n}}}")
    return [found[index] for index in range(len(cluster.nodes))]


async def _connected_clients(cluster: EmbeddedRedisCluster) -> list[int]:
    counts = []
    for node in cluster.nodes:
        direct = aioredis.Redis(host="127.0.0.1", port=node.port)
        try:
            info = await direct.info("clients")
            counts.append(int(info["connected_clients"]) - 1)  # not this one
        finally:
            await direct.aclose()
    return counts


@pytest_asyncio.fixture
async def client(redis_cluster: EmbeddedRedisCluster) -> AsyncIterator[RedisClient]:
    client = create_redis(redis_cluster.url)
    yield client
    await client.aclose()


def test_cluster_urls_are_recognised() -> None:
    assert is_cluster_url("redis+cluster://127.0.0.1:7000")
    assert is_cluster_url("rediss+cluster://127.0.0.1:7000")
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    assert not is_cluster_url("127.0.0.1:7000+cluster")


async def test_commands_are_routed_to_the_master_of_their_slot(
    client: RedisClient, redis_cluster: EmbeddedRedisCluster
) -> None:
    assert isinstance(client, RedisCluster)
    await check_redis(client)
    tags = _tags_on_every_master(redis_cluster)
    suffix = uuid.uuid4().hex
    for index, tag in enumerate(tags):
        await client.set(f"{tag}:{suffix}", index)
    for index, (tag, node) in enumerate(zip(tags, redis_cluster.nodes, strict=True)):
        direct = aioredis.Redis(host="127.0.0.1", port=node.port)
        try:
            assert await direct.get(f"{tag}:{suffix}") == str(index).encode()
        finally:
            await direct.aclose()


async def test_every_node_packs_commands_with_hiredis(
    client: RedisClient, redis_cluster: EmbeddedRedisCluster
) -> None:
    assert isinstance(client, RedisCluster)
    suffix = uuid.uuid4().hex
    for tag in _tags_on_every_master(redis_cluster):  # connects to every master
        await client.set(f"{tag}:packed:{suffix}", "\u20ac")
        assert await client.get(f"{tag}:packed:{suffix}") == "\u20ac".encode()
    nodes = client.get_nodes()
    assert len(nodes) == len(redis_cluster.nodes)
    assert {node.connection_class.__name__ for node in nodes} == {"HiredisPackingConnection"}


async def test_script_survives_script_flush_on_every_master(
    client: RedisClient, redis_cluster: EmbeddedRedisCluster
) -> None:
    script = LuaScript(client, INCR_BY)
    await script.load()  # on every master
    keys = [f"{tag}:counter:{uuid.uuid4().hex}" for tag in _tags_on_every_master(redis_cluster)]
    for key in keys:
        assert await script([key], [5, "tag"]) == [5, b"tag"]
    await client.script_flush()  # every master forgets it
    for key in keys:
        assert await script([key], [2, "again"]) == [7, b"again"], "reloaded after NOSCRIPT"


async def test_a_burst_waits_for_connections_instead_of_failing(
    redis_cluster: EmbeddedRedisCluster,
) -> None:
    """redis-py's cluster client alone raises MaxConnectionsError once a node's pool is in
    use; create_redis' client makes the burst wait, within `max_connections` per node."""
    before = await _connected_clients(redis_cluster)
    small = create_redis(redis_cluster.url, max_connections=4)
    tags = _tags_on_every_master(redis_cluster)
    key = f"{tags[0]}:burst:{uuid.uuid4().hex}"
    try:
        await small.set(key, "v")
        replies = await asyncio.gather(*(small.get(key) for _ in range(300)))
        assert replies == [b"v"] * 300

        async def pipelined(n: int) -> list[object]:
            async with small.pipeline(transaction=False) as pipe:
                for tag in tags:
                    pipe.incr(f"{tag}:burst-counter:{key}")
                return await pipe.execute()

        done = await asyncio.gather(*(pipelined(n) for n in range(100)))
        assert sorted(reply[0] for reply in done) == list(range(1, 101))
        after = await _connected_clients(redis_cluster)
        opened = [now - was for now, was in zip(after, before, strict=True)]
        # At most 4 per node; the seed (the first node) also keeps the connection the
        # client discovered the cluster's slots with.
        assert all(1 <= count <= 4 for count in opened[1:]), opened
        assert 1 <= opened[0] <= 5, opened
    finally:
        await small.aclose()


async def test_a_plain_redis_cluster_client_fails_such_a_burst(
    redis_cluster: EmbeddedRedisCluster,
) -> None:
    """What the test above guards against (if redis-py learns to wait, this fails and the
    workaround in obol_core.redis can go)."""
    plain = RedisCluster.from_url(redis_cluster.url.replace("+cluster", ""), max_connections=4)
    key = f"{_tags_on_every_master(redis_cluster)[0]}:plain:{uuid.uuid4().hex}"
    try:
        await plain.set(key, "v")
        with pytest.raises(MaxConnectionsError):
            await asyncio.gather(*(plain.get(key) for _ in range(300)))
    finally:
        await plain.aclose()

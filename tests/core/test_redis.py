"""Redis client factory, LuaScript surviving NOSCRIPT, readiness, against a real Redis."""

import socket
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection

from obol_core.redis import LuaScript, RedisClient, check_redis, create_redis

INCR_BY = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
return {value, ARGV[2]}
"""


@pytest_asyncio.fixture
async def client(redis_url: str) -> AsyncIterator[RedisClient]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


async def test_script_survives_script_flush(client: RedisClient) -> None:
    key = f"{{core}}:counter:{uuid.uuid4().hex}"
    script = LuaScript(client, INCR_BY)
    assert await script([key], [5, "tag"]) == [5, b"tag"]

    await client.script_flush()
    assert await client.script_exists(script.sha) == [False]
    assert await script([key], [2, "again"]) == [7, b"again"], "reloaded after NOSCRIPT"
    assert await client.script_exists(script.sha) == [True]


async def test_load_fails_fast_on_a_broken_script(client: RedisClient) -> None:
    await LuaScript(client, INCR_BY).load()
    with pytest.raises(redis.exceptions.ResponseError):
        await LuaScript(client, "return redis.call(").load()


async def test_replies_are_bytes(client: RedisClient) -> None:
    key = f"core:{uuid.uuid4().hex}"
    await client.set(key, "v")
    assert await client.get(key) == b"v"


async def test_commands_are_packed_by_hiredis_and_round_trip(client: RedisClient) -> None:
    assert isinstance(client, Redis)
    connection_class = client.connection_pool.connection_class
    assert connection_class.__name__ == "HiredisPackingConnection"
    packed = connection_class().pack_command("CONFIG GET", "x", 7, b"\xff")
    # The command name's words are split, as redis-py's own packer does.
    assert packed == [b"*5\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$1\r\nx\r\n$1\r\n7\r\n$1\r\n\xff\r\n"]
    key = f"core:{uuid.uuid4().hex}"
    pipe = client.pipeline(transaction=False)
    pipe.set(key, "h\u00e9llo \u20ac")
    pipe.hset(f"{key}:h", mapping={"n": 2**53 - 1, "b": b"\x00\xff"})
    pipe.get(key)
    pipe.hmget(f"{key}:h", "n", "b")
    pipe.config_get("appendonly")
    replies = await pipe.execute()
    assert replies[2] == "h\u00e9llo \u20ac".encode()
    assert replies[3] == [b"9007199254740991", b"\x00\xff"]
    assert set(replies[4]) == {"appendonly"}  # redis-py decodes CONFIG GET itself


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "f" * 40, 2, b"{p1}:w:a", b"{p1}:i:a", 2**53 - 1, -5, "h\u00e9", b"\x00"),
        (b"SET", "k", 1.5),
        ("CLIENT KILL", "TYPE", "replica"),  # a multi-word name is split into words
        (b"XADD", bytearray(b"s"), b"*", memoryview(b"f"), b"v"),  # hiredis refuses these
    ],
)
async def test_packing_matches_redis_pys_own_packer(
    client: RedisClient, args: tuple[object, ...]
) -> None:
    """Packing straight with hiredis (and falling back to redis-py's hiredis serializer)
    makes the bytes redis-py's Python packer makes."""
    assert isinstance(client, Redis)
    packing = client.connection_pool.connection_class()
    reference = Connection().pack_command(*args)
    assert b"".join(packing.pack_command(*args)) == b"".join(reference)


async def test_check_redis(client: RedisClient) -> None:
    await check_redis(client)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = create_redis(f"redis://127.0.0.1:{port}/0", socket_timeout_seconds=0.5)
    try:
        with pytest.raises((redis.exceptions.ConnectionError, TimeoutError)):
            await check_redis(unreachable, timeout_seconds=1)
    finally:
        await unreachable.aclose()


async def test_cluster_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBOL_REDIS_CLUSTER", raising=False)
    plain = create_redis("redis://127.0.0.1:6379/0")
    assert isinstance(plain, Redis)
    monkeypatch.setenv("OBOL_REDIS_CLUSTER", "1")
    from_env = create_redis("redis://127.0.0.1:7000")
    assert isinstance(from_env, RedisCluster)
    await from_env.aclose()
    assert isinstance(create_redis("redis://127.0.0.1:6379/0", cluster=False), Redis)
    for url, cluster in (
        ("redis+cluster://127.0.0.1:7000", False),
        ("rediss+cluster://127.0.0.1:7000", False),
        ("redis://127.0.0.1:7000", True),
    ):
        client = create_redis(url, cluster=cluster)
        assert isinstance(client, RedisCluster)
        tls = issubclass(client.connection_kwargs["connection_class"], SSLConnection)
        assert tls is url.startswith("rediss")
        await client.aclose()
    await plain.aclose()
    with pytest.raises(ValueError, match="not a Redis URL"):
        create_redis("localhost:6379")

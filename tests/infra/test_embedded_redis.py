"""EmbeddedRedis: durability settings, persistence across restarts and crashes."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from obol_cli.embedded import EmbeddedRedis, EmbeddedServerError, free_port

from .helpers import alive, wait_gone


async def test_session_server_durability_settings(redis_url: str) -> None:
    assert redis_url.startswith("redis://127.0.0.1:") and redis_url.endswith("/0")
    client = aioredis.from_url(redis_url)
    try:
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        assert await client.config_get("appendfsync") == {"appendfsync": "always"}
        assert await client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert await client.config_get("save") == {"save": ""}
        assert await client.config_get("bind") == {"bind": "127.0.0.1"}
    finally:
        await client.aclose()


async def test_data_survives_stop_start_and_kill_9(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    with server:
        client = aioredis.from_url(server.url)
        await client.set("balance", 100)
        await client.aclose()
    with server:
        client = aioredis.from_url(server.url)
        assert await client.get("balance") == b"100"
        await client.incrby("balance", 5)  # acknowledged, so fsynced (appendfsync always)
        await client.aclose()
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        assert not wait_gone([server.pid])
        server.stop()
    with server:
        client = aioredis.from_url(server.url)
        assert await client.get("balance") == b"105"
        await client.aclose()
    # Redis 7's multi-part AOF: a manifest and the incremental file the writes went to.
    assert list((tmp_path / "redis" / "appendonlydir").glob("appendonly.aof.*.incr.aof"))


async def test_appendfsync_can_be_relaxed(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", free_port(), appendfsync="everysec") as server:
        client = aioredis.from_url(server.url)
        assert await client.config_get("appendfsync") == {"appendfsync": "everysec"}
        await client.aclose()


def test_rejects_unknown_appendfsync(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="appendfsync"):
        EmbeddedRedis(tmp_path, free_port(), appendfsync="sometimes")


def test_stop_leaves_no_process_and_is_idempotent(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    pid = server.pid
    server.start()
    assert server.pid == pid
    server.stop()
    server.stop()
    assert pid is not None and not alive(pid)


def test_port_taken_by_another_server_fails_clearly(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "first", free_port()) as first:
        second = EmbeddedRedis(tmp_path / "second", first.port)
        with pytest.raises(EmbeddedServerError) as failure:
            second.start()
    assert "exited with code" in str(failure.value)
    assert "last lines of" in str(failure.value)
    assert "Address already in use" in str(failure.value)
    assert second.pid is None


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    for port in list(ports)[:3]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))

"""Redis or Postgres down: the wallet answers UNAVAILABLE (DEPENDENCY_UNAVAILABLE, the
dependency named, a RetryInfo), never INTERNAL, and serves again once it is back. Redis
full: RESOURCE_EXHAUSTED, nothing applied."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from obol.wallet.v1 import wallet_pb2

from obol_cli.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

from .harness import WalletApi, reason_of, retry_info, selector, usd, wallet_api


def refusal(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str], bool]:
    """Code, ErrorInfo reason and metadata, and whether a RetryInfo came with it."""
    reason, metadata = reason_of(err)
    return err.code(), reason, metadata, retry_info(err) is not None


@dataclass
class OwnRedis:
    """A live wallet on a Redis of its own, a wallet with 100, an Authorize of 30 to send."""

    server: EmbeddedRedis
    api: WalletApi
    wallet_id: str
    authorize: wallet_pb2.AuthorizeRequest

    async def refused(self) -> tuple[grpc.StatusCode, str, dict[str, str], bool]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await self.api.stub.Authorize(self.authorize)
        return refusal(refused.value)

    async def answered_once(self) -> None:
        """The same Authorize now goes through, applied once."""
        answered = await self.api.stub.Authorize(self.authorize)
        assert answered.held.amount == 30
        assert await self.api.available(self.wallet_id) == 70


@pytest_asyncio.fixture
async def own_redis(fresh_database: str, tmp_path: Path) -> AsyncIterator[OwnRedis]:
    with EmbeddedRedis(tmp_path / "redis", free_port()) as server:
        async with wallet_api("redis", fresh_database, server.url) as api:
            wallet_id = await api.wallet(100)
            request = wallet_pb2.AuthorizeRequest(
                request_id="authorize-1", wallet=selector(wallet_id), amount=usd(30)
            )
            yield OwnRedis(server, api, wallet_id, request)


async def test_redis_down_is_unavailable_and_the_wallet_serves_once_it_is_back(
    own_redis: OwnRedis,
) -> None:
    own_redis.server.stop()
    assert await own_redis.refused() == (
        grpc.StatusCode.UNAVAILABLE,
        "DEPENDENCY_UNAVAILABLE",
        {"dependency": "redis"},
        True,
    )
    own_redis.server.start()  # the same AOF: the wallet's hot state is back
    await own_redis.answered_once()


async def test_postgres_down_is_unavailable_and_the_wallet_serves_once_it_is_back(
    private_postgres: EmbeddedPostgres, redis_url: str
) -> None:
    database_url = private_postgres.create_database("wallet_down")
    async with wallet_api("redis", database_url, redis_url) as api:
        customer_id = await api.customer()
        private_postgres.stop()
        request = wallet_pb2.CreateWalletRequest(
            request_id="wallet-1", customer_id=customer_id, asset_code="USD"
        )
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await api.stub.CreateWallet(request)
        code, reason, metadata, retry = refusal(down.value)
        assert (code, reason, retry) == (
            grpc.StatusCode.UNAVAILABLE,
            "DEPENDENCY_UNAVAILABLE",
            True,
        )
        # A broken pooled connection is Postgres's; a refused new one is the network's.
        assert metadata["dependency"] in ("postgres", "network")
        private_postgres.start()
        created = await api.stub.CreateWallet(request)
        assert created.wallet.customer_id == customer_id


async def test_a_full_redis_refuses_changes_as_resource_exhausted_and_applies_nothing(
    own_redis: OwnRedis,
) -> None:
    redis = own_redis.api.redis
    await redis.config_set("maxmemory", 1)  # far below its use: full
    try:
        assert await own_redis.refused() == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "BACKPRESSURE",
            {"scope": "redis_memory"},
            True,
        )
        assert await own_redis.api.available(own_redis.wallet_id) == 100  # nothing held
    finally:
        await redis.config_set("maxmemory", 0)
    await own_redis.answered_once()


async def test_a_meter_stream_answers_an_outage_per_message_and_goes_on(
    own_redis: OwnRedis,
) -> None:
    """Redis stops while a Meter stream is open: the action meeting the outage gets an
    UNAVAILABLE error under its sequence, the stream stays open, and the same action sent
    again once Redis is back is applied (once)."""
    api, authorize = own_redis.api, own_redis.authorize
    outbox: asyncio.Queue[wallet_pb2.MeterRequest | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[wallet_pb2.MeterRequest]:
        while (message := await outbox.get()) is not None:
            yield message

    stream = api.stub.Meter(requests())
    own_redis.server.stop()
    await outbox.put(wallet_pb2.MeterRequest(sequence=1, authorize=authorize))
    refused = await stream.read()
    assert refused.sequence == 1
    assert refused.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in refused.error.details)
    assert (info.reason, info.metadata["dependency"]) == ("DEPENDENCY_UNAVAILABLE", "redis")

    own_redis.server.start()
    await outbox.put(wallet_pb2.MeterRequest(sequence=2, authorize=authorize))
    answered = await stream.read()
    assert answered.sequence == 2
    assert answered.authorize.held.amount == 30
    await outbox.put(None)
    assert await stream.read() is grpc.aio.EOF
    assert await api.available(own_redis.wallet_id) == 70

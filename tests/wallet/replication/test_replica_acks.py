"""OBOL_REDIS_REPLICA_ACKS against a real primary and replica: an acknowledged change
survives a failover to the replica, and a change the replica has not confirmed is never
acknowledged (while, without the setting, a failover loses an acknowledged hold)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import grpc
import grpc.aio
import pytest
import redis
from obol.wallet.v1 import wallet_pb2

from obol_core.redis import RedisClient, ReplicaAcks, ReplicationUnconfirmed, create_redis
from obol_wallet.errors import InsufficientFunds
from obol_wallet.model import AuthorizeResult
from obol_wallet.redis_backend import RedisBackend

from ..grpc.harness import reason_of, retry_info, selector, usd, wallet_api
from ..redis.helpers import PARTITIONS, Harness
from .conftest import Replicated

ACKS = ReplicaAcks(replicas=1, timeout_ms=200)


@asynccontextmanager
async def harness(url: str, acks: ReplicaAcks | None) -> AsyncIterator[Harness]:
    client: RedisClient = create_redis(url)
    try:
        h = Harness(client)
        h.backend = RedisBackend(client, partitions=PARTITIONS, replica_acks=acks)
        await h.backend.load_scripts()
        yield h
    finally:
        await client.aclose()


@contextmanager
def replica_frozen(pair: Replicated) -> Iterator[None]:
    """The replica stops (SIGSTOP): still connected as far as the primary knows, it
    confirms nothing written from now on until this ends."""
    assert pair.replica.pid is not None
    os.kill(pair.replica.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pair.replica.pid, signal.SIGCONT)


@contextmanager
def replica_cut_off(pair: Replicated) -> Iterator[None]:
    """The replica stops and the primary drops its link: nothing written from now on
    reaches the replica until this ends (the replica then reconnects and resyncs)."""
    with replica_frozen(pair), redis.Redis.from_url(pair.primary.url) as primary:
        primary.client_kill_filter(_type="replica")
        yield


def kill_primary(pair: Replicated) -> None:
    assert pair.primary.pid is not None
    os.kill(pair.primary.pid, signal.SIGKILL)


def fail_over(pair: Replicated) -> None:
    """The primary dies (kill -9) and the replica takes over with what it has."""
    kill_primary(pair)
    pair.promote_replica()


async def test_acknowledged_authorizations_survive_a_failover(replicated: Replicated) -> None:
    async with harness(replicated.primary.url, ACKS) as h:
        wallet_id = await h.wallet(100)

        async def attempt() -> AuthorizeResult | None:
            try:
                return await h.authorize(wallet_id, 3)
            except InsufficientFunds:
                return None

        results = await asyncio.gather(*(attempt() for _ in range(50)))
    accepted = [r for r in results if r is not None]
    assert len(accepted) == 33  # 100 // 3: the race is decided by the primary alone

    fail_over(replicated)
    async with harness(replicated.replica.url, None) as after:  # no replica left
        balance = await after.backend.balance(wallet_id, after.now)
        assert balance.held == 99
        assert balance.available == 1
        for result in accepted:
            hold = await after.backend.hold(wallet_id, result.hold_id, after.now)
            assert hold.authorized == 3


async def test_without_replica_acks_a_failover_loses_an_acknowledged_hold(
    replicated: Replicated,
) -> None:
    """Why the setting exists: replication is asynchronous."""
    async with harness(replicated.primary.url, None) as h:
        wallet_id = await h.wallet(100)
        replicated.wait_in_sync()
        with replica_cut_off(replicated):
            acknowledged = await h.authorize(wallet_id, 30)
            kill_primary(replicated)
    replicated.promote_replica()
    async with harness(replicated.replica.url, None) as after:
        balance = await after.backend.balance(wallet_id, after.now)
        assert acknowledged.held == 30
        assert balance.held == 0  # the acknowledged hold is gone
        assert balance.available == 100


async def test_a_change_no_replica_confirmed_is_refused_then_answered_on_retry(
    replicated: Replicated,
) -> None:
    async with harness(replicated.primary.url, ACKS) as h:
        wallet_id = await h.wallet(100)
        request = h.authorize_request(wallet_id, 30)
        with replica_cut_off(replicated), pytest.raises(ReplicationUnconfirmed) as refused:
            await h.backend.authorize(request)
        assert refused.value.metadata == {
            "dependency": "redis",
            "confirmed_replicas": "0",
            "required_replicas": "1",
        }
        # The replica is back: the same request is answered (a replay, applied once).
        replicated.wait_in_sync()
        answered = await h.backend.authorize(request)
        assert answered.held == 30
        again = await h.backend.authorize(request)
        assert again.hold_id == answered.hold_id

    fail_over(replicated)
    async with harness(replicated.replica.url, None) as after:  # no replica left
        balance = await after.backend.balance(wallet_id, after.now)
        assert balance.held == 30
        hold = await after.backend.hold(wallet_id, answered.hold_id, after.now)
        assert hold.authorized == 30


async def test_a_retry_on_another_connection_waits_for_the_original_change(
    replicated: Replicated,
) -> None:
    """A retry from another client, a replay that writes nothing, is refused too while the
    replica lacks the original change: the fence written before each WAIT makes it wait
    for everything up to now, whatever the connection wrote before."""
    async with harness(replicated.primary.url, ACKS) as h:
        wallet_id = await h.wallet(100)
        request = h.authorize_request(wallet_id, 30)
        replicated.wait_in_sync()
        with replica_frozen(replicated):
            with pytest.raises(ReplicationUnconfirmed):
                await h.backend.authorize(request)
            # A client that has written nothing (the scripts are already loaded: SCRIPT
            # LOAD would be a write on its connection).
            other = create_redis(replicated.primary.url)
            try:
                backend = RedisBackend(other, partitions=PARTITIONS, replica_acks=ACKS)
                with pytest.raises(ReplicationUnconfirmed):
                    await backend.authorize(request)
            finally:
                await other.aclose()
        replicated.wait_in_sync()
        answered = await h.backend.authorize(request)
        assert answered.held == 30


async def test_a_batch_waits_once_for_all_of_its_items(replicated: Replicated) -> None:
    async with harness(replicated.primary.url, ACKS) as h:
        wallets = [await h.wallet(10) for _ in range(5)]
        requests = [h.authorize_request(w, 4) for w in wallets for _ in range(3)]
        with replica_cut_off(replicated), pytest.raises(ReplicationUnconfirmed):
            await h.backend.authorize_many(requests)
        replicated.wait_in_sync()
        results = await h.backend.authorize_many(requests)  # replays and refusals, again
    accepted = [r for r in results if isinstance(r, AuthorizeResult)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert (len(accepted), len(refused)) == (10, 5)  # two of 4 fit in 10, per wallet

    fail_over(replicated)
    async with harness(replicated.replica.url, None) as after:  # no replica left
        for wallet_id in wallets:
            assert (await after.backend.balance(wallet_id, after.now)).held == 8


async def test_grpc_refuses_an_unconfirmed_change_as_unavailable_with_a_retry_delay(
    replicated: Replicated, fresh_database: str
) -> None:
    async with wallet_api(
        "redis", fresh_database, replicated.primary.url, replica_acks=ACKS
    ) as api:
        wallet_id = await api.wallet(100)
        request = wallet_pb2.AuthorizeRequest(
            request_id="authorize-1", wallet=selector(wallet_id), amount=usd(30)
        )
        replicated.wait_in_sync()
        with replica_cut_off(replicated), pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.stub.Authorize(request)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        reason, metadata = reason_of(refused.value)
        retry = retry_info(refused.value)
        assert reason == "REPLICATION_UNCONFIRMED"
        assert metadata["required_replicas"] == "1"
        assert retry is not None
        assert retry.retry_delay.seconds == 1

        replicated.wait_in_sync()
        answered = await api.stub.Authorize(request)
        assert answered.held.amount == 30
        assert await api.available(wallet_id) == 70

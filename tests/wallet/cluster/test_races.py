"""Concurrency on Redis Cluster: the check and the change are one Lua call on the wallet's
master, so concurrent spends cannot overdraw a wallet, whichever master serves it."""

from __future__ import annotations

import asyncio
from collections import Counter

from google.protobuf.duration_pb2 import Duration
from obol.wallet.v1 import wallet_pb2

from obol_cli.embedded import EmbeddedRedisCluster

from ..grpc.harness import WalletApi, selector, usd
from .support import DOLLAR, outcomes, wallets_on_every_master


def _authorize(wallet_id: str, amount: int, request_id: str) -> wallet_pb2.AuthorizeRequest:
    return wallet_pb2.AuthorizeRequest(
        request_id=request_id,
        wallet=selector(wallet_id),
        amount=usd(amount),
        ttl=Duration(seconds=300),
    )


async def _held_and_available(api: WalletApi, wallet_id: str) -> tuple[int, int]:
    reply = await api.stub.GetWallet(wallet_pb2.GetWalletRequest(wallet=selector(wallet_id)))
    return reply.wallet.held.amount, reply.wallet.available.amount


async def test_fifty_concurrent_authorizations_of_3_on_5_accept_exactly_one(
    cluster_api: WalletApi,
) -> None:
    api = cluster_api
    wallet_id = await api.wallet(5 * DOLLAR)
    calls = [api.stub.Authorize(_authorize(wallet_id, 3 * DOLLAR, f"race-{i}")) for i in range(50)]
    assert await outcomes(calls) == Counter({"OK": 1, "INSUFFICIENT_FUNDS": 49})
    assert await _held_and_available(api, wallet_id) == (3 * DOLLAR, 2 * DOLLAR)

    await api.drain_ledger()  # and Postgres recorded exactly one hold
    holds = await api.pool.fetch(
        "SELECT authorized, state FROM holds WHERE wallet_id = $1", wallet_id
    )
    assert [(h["authorized"], h["state"]) for h in holds] == [(3 * DOLLAR, "open")]


async def test_races_on_every_master_at_once_each_accept_exactly_one(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster
) -> None:
    """50 Authorize and 50 Charge of $3 on each of three $5 wallets on three masters, all
    150 x 2 in flight together: per wallet exactly one of the 100 spends goes through."""
    api = cluster_api
    wallets = await wallets_on_every_master(api, redis_cluster, 5 * DOLLAR)
    calls = []
    for wallet_id in wallets:
        for i in range(50):
            calls.append(api.stub.Authorize(_authorize(wallet_id, 3 * DOLLAR, f"auth-{i}")))
            calls.append(
                api.stub.Charge(
                    wallet_pb2.ChargeRequest(
                        request_id=f"charge-{i}",
                        wallet=selector(wallet_id),
                        amount=usd(3 * DOLLAR),
                    )
                )
            )
    assert await outcomes(calls) == Counter({"OK": 3, "INSUFFICIENT_FUNDS": 297})
    for wallet_id in wallets:
        held, available = await _held_and_available(api, wallet_id)
        assert available == 2 * DOLLAR
        assert held in (0, 3 * DOLLAR)  # the one spend was a hold or a charge


async def test_concurrent_retries_of_one_request_make_one_hold(cluster_api: WalletApi) -> None:
    api = cluster_api
    wallet_id = await api.wallet(5 * DOLLAR)
    calls = [api.stub.Authorize(_authorize(wallet_id, DOLLAR, "same-request")) for _ in range(30)]
    replies = await asyncio.gather(*calls)
    assert len({reply.hold_id for reply in replies}) == 1
    assert await _held_and_available(api, wallet_id) == (DOLLAR, 4 * DOLLAR)

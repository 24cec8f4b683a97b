"""The wallet's hot path over real gRPC on a real Redis Cluster of three masters.

Wallets are spread over partitions (hash tags `{pN}`) that the cluster serves from
different masters; each test uses a wallet on every master, so every script runs on each
of them and the client's slot routing is exercised.
"""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
import redis.asyncio as aioredis
from google.protobuf.duration_pb2 import Duration
from obol.wallet.v1 import wallet_pb2
from redis.exceptions import MovedError

from obol_cli.embedded import EmbeddedRedisCluster

from ..grpc.harness import WalletApi, reason_of, selector, usd
from .support import DOLLAR, wallet_key, wallets_on_every_master

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]


def _authorize(wallet_id: str, amount: int, request_id: str) -> wallet_pb2.AuthorizeRequest:
    return wallet_pb2.AuthorizeRequest(
        request_id=request_id,
        wallet=selector(wallet_id),
        amount=usd(amount),
        ttl=Duration(seconds=300),
    )


async def _wallet(api: WalletApi, wallet_id: str) -> wallet_pb2.Wallet:
    reply = await api.stub.GetWallet(wallet_pb2.GetWalletRequest(wallet=selector(wallet_id)))
    return reply.wallet


async def test_each_wallet_lives_on_the_master_that_serves_its_slot(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster
) -> None:
    wallets = await wallets_on_every_master(cluster_api, redis_cluster, 5 * DOLLAR)
    for owner, wallet_id in enumerate(wallets):
        for index, node in enumerate(redis_cluster.nodes):
            direct = aioredis.Redis(host="127.0.0.1", port=node.port)  # this node only, no routing
            try:
                if index == owner:
                    assert await direct.hget(wallet_key(wallet_id), "hydrated") == b"1"
                    assert await direct.hget(wallet_key(wallet_id), "active") == b"5000000000"
                else:
                    with pytest.raises(MovedError) as moved:  # refused, sent to the owner
                        await direct.hget(wallet_key(wallet_id), "hydrated")
                    assert moved.value.port == redis_cluster.nodes[owner].port
            finally:
                await direct.aclose()


async def test_grant_authorize_capture_void_charge_and_get_wallet_on_every_master(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster
) -> None:
    api = cluster_api
    # Opened with CreateWallet and granted $5 by TopUp (a purchased grant).
    wallets = await wallets_on_every_master(api, redis_cluster, 5 * DOLLAR)
    for wallet_id in wallets:
        opened = await _wallet(api, wallet_id)
        assert (opened.balance.amount, opened.available.amount) == (5 * DOLLAR, 5 * DOLLAR)
        assert [g.remaining.amount for g in opened.grants] == [5 * DOLLAR]

        granted = await api.stub.CreateGrant(
            wallet_pb2.CreateGrantRequest(
                request_id=f"promo-{wallet_id}",
                wallet=selector(wallet_id),
                kind=wallet_pb2.GRANT_KIND_PROMOTIONAL,
                amount=usd(DOLLAR),
            )
        )
        assert granted.grant.grant_id
        assert granted.wallet.available.amount == 6 * DOLLAR

        hold = await api.stub.Authorize(_authorize(wallet_id, 2 * DOLLAR, "auth-1"))
        assert hold.wallet_id == wallet_id
        assert (hold.held.amount, hold.available.amount) == (2 * DOLLAR, 4 * DOLLAR)
        during = await _wallet(api, wallet_id)
        assert (during.held.amount, during.available.amount) == (2 * DOLLAR, 4 * DOLLAR)

        capture = wallet_pb2.CaptureRequest(
            request_id="capture-1",
            hold_id=hold.hold_id,
            amount=usd(DOLLAR + DOLLAR // 2),
            provider_cost=usd(DOLLAR // 4),
        )
        captured = await api.stub.Capture(capture)
        assert captured.settlement.charged.amount == DOLLAR + DOLLAR // 2
        assert captured.settlement.margin.amount == DOLLAR + DOLLAR // 4
        assert captured.released.amount == DOLLAR // 2
        assert captured.available.amount == 4 * DOLLAR + DOLLAR // 2
        replayed = await api.stub.Capture(capture)  # same request id: the first result
        assert replayed.transaction_id == captured.transaction_id

        voided_hold = await api.stub.Authorize(_authorize(wallet_id, DOLLAR, "auth-2"))
        voided = await api.stub.Void(
            wallet_pb2.VoidRequest(request_id="void-1", hold_id=voided_hold.hold_id)
        )
        assert voided.released.amount == DOLLAR
        assert voided.available.amount == 4 * DOLLAR + DOLLAR // 2
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await api.stub.Void(
                wallet_pb2.VoidRequest(request_id="void-2", hold_id=voided_hold.hold_id)
            )
        assert reason_of(again.value)[0] == "HOLD_VOIDED"

        charged = await api.stub.Charge(
            wallet_pb2.ChargeRequest(
                request_id="charge-1", wallet=selector(wallet_id), amount=usd(DOLLAR // 2)
            )
        )
        assert charged.settlement.charged.amount == DOLLAR // 2
        assert charged.available.amount == 4 * DOLLAR
        with pytest.raises(grpc.aio.AioRpcError) as too_much:
            await api.stub.Charge(
                wallet_pb2.ChargeRequest(
                    request_id="charge-2", wallet=selector(wallet_id), amount=usd(10 * DOLLAR)
                )
            )
        assert too_much.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        refusal, metadata = reason_of(too_much.value)
        assert refusal == "INSUFFICIENT_FUNDS"
        assert (metadata["available"], metadata["required"]) == (str(4 * DOLLAR), str(10 * DOLLAR))

        final = await _wallet(api, wallet_id)
        assert (final.balance.amount, final.held.amount, final.available.amount) == (
            4 * DOLLAR,
            0,
            4 * DOLLAR,
        )
        assert sum(g.remaining.amount for g in final.grants) == 4 * DOLLAR
        assert final.balance_version > opened.balance_version


async def test_batches_with_items_on_every_master(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster
) -> None:
    """One batch, items in partitions served by all three masters: each item is its own
    Lua call routed to its own master (D8), answered in request order.

    FAILS on Redis Cluster until redis_backend/backend.py `_pipeline` stops calling
    `pipe.evalsha(...)`: redis-py blocks EVALSHA on cluster pipelines (RedisClusterException
    "Calling pipelined function evalsha is blocked when running redis in cluster mode"),
    so every Batch* RPC answers INTERNAL. `pipe.execute_command("EVALSHA", ...)` routes
    each call by its keys' slot and works (see docs/wallet.md, "Redis Cluster")."""
    api = cluster_api
    wallets = await wallets_on_every_master(api, redis_cluster, 5 * DOLLAR)
    items = [_authorize(w, 2 * DOLLAR, f"batch-{i}") for i, w in enumerate(wallets)]
    items.insert(1, _authorize(wallets[0], 4 * DOLLAR, "batch-too-much"))  # $3 left there
    authorized = await api.stub.BatchAuthorize(wallet_pb2.BatchAuthorizeRequest(items=items))

    outcomes = [r.WhichOneof("outcome") for r in authorized.results]
    assert outcomes == ["response", "error", "response", "response"]
    assert authorized.results[1].error.code == FAILED_PRECONDITION
    holds = [r.response for r in authorized.results if r.HasField("response")]
    assert [h.wallet_id for h in holds] == wallets
    assert all(h.available.amount == 3 * DOLLAR for h in holds)

    captured = await api.stub.BatchCapture(
        wallet_pb2.BatchCaptureRequest(
            items=[
                wallet_pb2.CaptureRequest(
                    request_id="batch-capture-0", hold_id=holds[0].hold_id, amount=usd(DOLLAR)
                ),
                wallet_pb2.CaptureRequest(
                    request_id="batch-capture-1", hold_id=holds[1].hold_id, amount=usd(DOLLAR)
                ),
            ]
        )
    )
    assert [r.response.settlement.charged.amount for r in captured.results] == [DOLLAR] * 2
    voided = await api.stub.BatchVoid(
        wallet_pb2.BatchVoidRequest(
            items=[wallet_pb2.VoidRequest(request_id="batch-void", hold_id=holds[2].hold_id)]
        )
    )
    assert voided.results[0].response.released.amount == 2 * DOLLAR
    charged = await api.stub.BatchCharge(
        wallet_pb2.BatchChargeRequest(
            items=[
                wallet_pb2.ChargeRequest(
                    request_id="batch-charge", wallet=selector(w), amount=usd(DOLLAR)
                )
                for w in wallets
            ]
        )
    )
    assert [r.response.wallet_id for r in charged.results] == wallets

    available = [(await _wallet(api, w)).available.amount for w in wallets]
    assert available == [3 * DOLLAR, 3 * DOLLAR, 4 * DOLLAR]

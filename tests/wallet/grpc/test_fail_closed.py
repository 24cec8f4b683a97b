"""A wallet whose Redis hot state is gone is refused with UNAVAILABLE, never served as zero,
until `obol rebuild` restores it from Postgres (plus the unconsumed stream), exactly."""

from __future__ import annotations

import os

import grpc
import grpc.aio
import pytest
from infra.cli import run_obol
from obol.wallet.v1 import wallet_pb2

from obol_wallet.partitions import keys_for
from obol_wallet.redis_backend import RedisBackend

from .harness import PARTITIONS, WalletApi, selector, usd

DOLLAR = 1_000_000_000


async def test_missing_hot_state_fails_closed_until_rebuilt(
    redis_api: WalletApi, fresh_database: str
) -> None:
    api = redis_api
    assert isinstance(api.backend, RedisBackend)
    wallet_id = await api.wallet(5 * DOLLAR)
    hold = await api.stub.Authorize(
        wallet_pb2.AuthorizeRequest(
            request_id="fc-a", wallet=selector(wallet_id), amount=usd(DOLLAR)
        )
    )
    await api.stub.SetAutoTopUpRule(
        wallet_pb2.SetAutoTopUpRuleRequest(
            request_id="fc-rule",
            wallet_id=wallet_id,
            threshold=usd(DOLLAR // 2),
            amount=usd(DOLLAR),
            payment_method_id="pm_ok_card",
        )
    )
    await api.backend.drop_hot_state(wallet_id)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.stub.GetWallet(wallet_pb2.GetWalletRequest(wallet=selector(wallet_id)))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as spend:
        await api.stub.Charge(
            wallet_pb2.ChargeRequest(request_id="fc-c", wallet=selector(wallet_id), amount=usd(1))
        )
    assert spend.value.code() == grpc.StatusCode.UNAVAILABLE

    connection = api.redis.connection_pool.connection_kwargs
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database,
        "REDIS_URL": f"redis://{connection['host']}:{connection['port']}/{connection['db']}",
        "OBOL_WALLET_PARTITIONS": str(PARTITIONS),
    }
    code, output = await run_obol(env, "rebuild", "--apply-stream")
    assert code == 0, output
    hot = keys_for(wallet_id, PARTITIONS).wallet
    assert await api.redis.hget(hot, "tu_rule") == b"1"  # the auto top-up rule is back too
    assert await api.available(wallet_id) == 4 * DOLLAR  # the top-up, less the open hold
    captured = await api.stub.Capture(
        wallet_pb2.CaptureRequest(request_id="fc-cap", hold_id=hold.hold_id, amount=usd(DOLLAR))
    )
    assert captured.available.amount == 4 * DOLLAR
    code, output = await run_obol(env, "reconcile")
    assert code == 0, output

"""Batch forms: one result per item, in order; refusals are per item, never the batch."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from obol.wallet.v1 import wallet_pb2

from .harness import WalletApi, selector, usd

DOLLAR = 1_000_000_000


async def test_batch_authorize_capture_and_charge_answer_each_item(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    authorized = await api.stub.BatchAuthorize(
        wallet_pb2.BatchAuthorizeRequest(
            items=[
                wallet_pb2.AuthorizeRequest(
                    request_id=f"ba-{i}", wallet=selector(wallet_id), amount=usd(DOLLAR)
                )
                for i in range(7)
            ]
        )
    )
    # $5 covers five holds of $1; which five is up to the backend (items are independent).
    assert len(authorized.results) == 7
    holds = [r.response.hold_id for r in authorized.results if r.HasField("response")]
    refused = [r.error for r in authorized.results if r.HasField("error")]
    assert len(holds) == 5
    assert [e.code for e in refused] == [grpc.StatusCode.FAILED_PRECONDITION.value[0]] * 2

    captured = await api.stub.BatchCapture(
        wallet_pb2.BatchCaptureRequest(
            items=[
                wallet_pb2.CaptureRequest(
                    request_id=f"bc-{i}", hold_id=hold_id, amount=usd(DOLLAR // 2)
                )
                for i, hold_id in enumerate([*holds, "hld_unknown"])
            ]
        )
    )
    assert [r.WhichOneof("outcome") for r in captured.results] == ["response"] * 5 + ["error"]
    assert captured.results[0].response.settlement.charged.amount == DOLLAR // 2
    assert captured.results[5].error.code == grpc.StatusCode.NOT_FOUND.value[0]

    charged = await api.stub.BatchCharge(
        wallet_pb2.BatchChargeRequest(
            items=[
                wallet_pb2.ChargeRequest(
                    request_id=f"bch-{i}", wallet=selector(wallet_id), amount=usd(DOLLAR)
                )
                for i in range(3)
            ]
        )
    )
    assert sorted(r.WhichOneof("outcome") for r in charged.results) == [
        "error",
        "response",
        "response",
    ]
    assert await api.available(wallet_id) == DOLLAR // 2


async def test_a_malformed_batch_is_refused_whole_naming_the_item(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.BatchCharge(
            wallet_pb2.BatchChargeRequest(
                items=[
                    wallet_pb2.ChargeRequest(
                        request_id="ok", wallet=selector(wallet_id), amount=usd(1)
                    ),
                    wallet_pb2.ChargeRequest(request_id="bad", wallet=selector(wallet_id)),
                ]
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[1]" in (caught.value.details() or "")
    assert await api.available(wallet_id) == 5 * DOLLAR

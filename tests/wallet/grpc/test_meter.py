"""The bidirectional Meter stream: actions answered by sequence; errors do not end it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from obol.wallet.v1 import wallet_pb2

from .harness import WalletApi, selector, usd

DOLLAR = 1_000_000_000


async def _requests(wallet_id: str) -> AsyncIterator[wallet_pb2.MeterRequest]:
    yield wallet_pb2.MeterRequest(
        sequence=1,
        charge=wallet_pb2.ChargeRequest(
            request_id="m-1", wallet=selector(wallet_id), amount=usd(DOLLAR)
        ),
    )
    yield wallet_pb2.MeterRequest(  # invalid: no request_id; answered, not fatal
        sequence=2,
        charge=wallet_pb2.ChargeRequest(wallet=selector(wallet_id), amount=usd(DOLLAR)),
    )
    yield wallet_pb2.MeterRequest(  # refused: more than the wallet has
        sequence=3,
        charge=wallet_pb2.ChargeRequest(
            request_id="m-3", wallet=selector(wallet_id), amount=usd(10 * DOLLAR)
        ),
    )
    yield wallet_pb2.MeterRequest(
        sequence=4,
        authorize=wallet_pb2.AuthorizeRequest(
            request_id="m-4", wallet=selector(wallet_id), amount=usd(DOLLAR)
        ),
    )


async def test_meter_answers_every_action_under_its_sequence(api: WalletApi) -> None:
    wallet_id = await api.wallet(2 * DOLLAR)
    replies = [reply async for reply in api.stub.Meter(_requests(wallet_id))]
    by_sequence = {reply.sequence: reply for reply in replies}
    assert sorted(by_sequence) == [1, 2, 3, 4]
    assert by_sequence[1].charge.available.amount == DOLLAR
    assert by_sequence[2].WhichOneof("result") == "error"
    assert by_sequence[2].error.code == 3  # INVALID_ARGUMENT
    assert by_sequence[3].error.code == 9  # FAILED_PRECONDITION (insufficient funds)
    assert by_sequence[4].authorize.available.amount == 0

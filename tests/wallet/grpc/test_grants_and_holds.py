"""GetGrant (live and after it is used up), ListHolds, BatchVoid."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from obol.wallet.v1 import wallet_pb2

from .harness import WalletApi, selector, usd

DOLLAR = 1_000_000_000


async def test_get_grant_live_then_exhausted(api: WalletApi) -> None:
    wallet_id = await api.wallet()
    top_up = await api.stub.TopUp(
        wallet_pb2.TopUpRequest(
            request_id="gg-top",
            wallet=selector(wallet_id),
            amount=usd(DOLLAR),
            payment_reference="p",
        )
    )
    grant_id = top_up.grant.grant_id
    live = await api.stub.GetGrant(wallet_pb2.GetGrantRequest(grant_id=grant_id))
    assert live.grant.remaining.amount == DOLLAR
    assert live.grant.state == wallet_pb2.GRANT_STATE_ACTIVE

    await api.stub.Charge(
        wallet_pb2.ChargeRequest(
            request_id="gg-spend", wallet=selector(wallet_id), amount=usd(DOLLAR)
        )
    )
    await api.drain_ledger()
    used = await api.stub.GetGrant(wallet_pb2.GetGrantRequest(grant_id=grant_id))
    assert used.grant.remaining.amount == 0
    assert used.grant.state == wallet_pb2.GRANT_STATE_EXHAUSTED

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.GetGrant(wallet_pb2.GetGrantRequest(grant_id="grt_nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_holds_by_state_and_batch_void(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    holds = []
    for i in range(3):
        reply = await api.stub.Authorize(
            wallet_pb2.AuthorizeRequest(
                request_id=f"lh-{i}", wallet=selector(wallet_id), amount=usd(DOLLAR)
            )
        )
        holds.append(reply.hold_id)
    voided = await api.stub.BatchVoid(
        wallet_pb2.BatchVoidRequest(
            items=[
                wallet_pb2.VoidRequest(request_id="bv-0", hold_id=holds[0]),
                wallet_pb2.VoidRequest(request_id="bv-1", hold_id="hld_unknown"),
            ]
        )
    )
    assert [r.WhichOneof("outcome") for r in voided.results] == ["response", "error"]
    assert voided.results[0].response.released.amount == DOLLAR
    await api.drain_ledger()

    open_holds = await api.stub.ListHolds(
        wallet_pb2.ListHoldsRequest(
            wallet=selector(wallet_id), states=[wallet_pb2.HOLD_STATE_OPEN], page_size=1
        )
    )
    assert [h.hold_id for h in open_holds.holds] == [holds[1]]
    rest = await api.stub.ListHolds(
        wallet_pb2.ListHoldsRequest(
            wallet=selector(wallet_id),
            states=[wallet_pb2.HOLD_STATE_OPEN],
            page_token=open_holds.next_page_token,
        )
    )
    assert [h.hold_id for h in rest.holds] == [holds[2]]
    everything = await api.stub.ListHolds(wallet_pb2.ListHoldsRequest(wallet=selector(wallet_id)))
    states = {h.hold_id: h.state for h in everything.holds}
    assert states[holds[0]] == wallet_pb2.HOLD_STATE_VOIDED

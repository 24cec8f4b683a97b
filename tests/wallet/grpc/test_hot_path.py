"""The wallet's hot path over real gRPC, on both backends (Redis + Lua, Postgres baseline)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2

from .harness import USD, WalletApi, field_violations, reason_of, selector, usd

DOLLAR = 1_000_000_000


def _authorize(
    wallet_id: str, amount: int, request_id: str, ttl_s: int = 60
) -> wallet_pb2.AuthorizeRequest:
    return wallet_pb2.AuthorizeRequest(
        request_id=request_id,
        wallet=selector(wallet_id),
        amount=usd(amount),
        ttl=Duration(seconds=ttl_s),
    )


async def _outcomes(calls: list[asyncio.Future[object]] | list[object]) -> Counter[str]:
    results = await asyncio.gather(*calls, return_exceptions=True)  # type: ignore[arg-type]
    counts: Counter[str] = Counter()
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            counts[reason_of(result)[0]] += 1
        elif isinstance(result, BaseException):
            raise result
        else:
            counts["OK"] += 1
    return counts


async def test_two_hundred_concurrent_authorizations_of_3_on_5_accept_exactly_one(
    api: WalletApi,
) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    calls = [api.stub.Authorize(_authorize(wallet_id, 3 * DOLLAR, f"race-{i}")) for i in range(200)]
    assert await _outcomes(calls) == Counter({"OK": 1, "INSUFFICIENT_FUNDS": 199})
    assert await api.available(wallet_id) == 2 * DOLLAR


async def test_two_hundred_concurrent_charges_of_3_on_5_accept_exactly_one(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    calls = [
        api.stub.Charge(
            wallet_pb2.ChargeRequest(
                request_id=f"charge-{i}", wallet=selector(wallet_id), amount=usd(3 * DOLLAR)
            )
        )
        for i in range(200)
    ]
    assert await _outcomes(calls) == Counter({"OK": 1, "INSUFFICIENT_FUNDS": 199})
    assert await api.available(wallet_id) == 2 * DOLLAR


async def test_insufficient_funds_names_available_and_required(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Authorize(_authorize(wallet_id, 6 * DOLLAR, "too-much"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    reason, metadata = reason_of(caught.value)
    assert reason == "INSUFFICIENT_FUNDS"
    assert metadata["available"] == str(5 * DOLLAR)
    assert metadata["required"] == str(6 * DOLLAR)


async def test_holds_count_against_the_balance(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    accepted = 0
    for i in range(6):
        try:
            await api.stub.Authorize(_authorize(wallet_id, DOLLAR, f"hold-{i}"))
            accepted += 1
        except grpc.aio.AioRpcError as err:
            assert reason_of(err)[0] == "INSUFFICIENT_FUNDS"
    assert accepted == 5
    assert await api.available(wallet_id) == 0


async def test_capture_less_releases_the_rest_and_resolves_once(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    hold = await api.stub.Authorize(_authorize(wallet_id, 3 * DOLLAR, "cap-auth"))
    captured = await api.stub.Capture(
        wallet_pb2.CaptureRequest(
            request_id="cap-1",
            hold_id=hold.hold_id,
            amount=usd(DOLLAR),
            provider_cost=usd(DOLLAR // 4),
        )
    )
    assert captured.settlement.charged.amount == DOLLAR
    assert captured.settlement.margin.amount == DOLLAR - DOLLAR // 4
    assert captured.released.amount == 2 * DOLLAR
    assert captured.available.amount == 4 * DOLLAR

    again = await api.stub.Capture(
        wallet_pb2.CaptureRequest(
            request_id="cap-1",
            hold_id=hold.hold_id,
            amount=usd(DOLLAR),
            provider_cost=usd(DOLLAR // 4),
        )
    )
    assert again.transaction_id == captured.transaction_id  # a replay, not a second capture

    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await api.stub.Capture(
            wallet_pb2.CaptureRequest(request_id="cap-2", hold_id=hold.hold_id, amount=usd(1))
        )
    assert reason_of(twice.value)[0] == "HOLD_ALREADY_CAPTURED"
    with pytest.raises(grpc.aio.AioRpcError) as void_after:
        await api.stub.Void(wallet_pb2.VoidRequest(request_id="void-1", hold_id=hold.hold_id))
    assert reason_of(void_after.value)[0] == "HOLD_ALREADY_CAPTURED"
    assert await api.available(wallet_id) == 4 * DOLLAR


async def test_void_then_capture_is_refused(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    hold = await api.stub.Authorize(_authorize(wallet_id, 3 * DOLLAR, "v-auth"))
    voided = await api.stub.Void(wallet_pb2.VoidRequest(request_id="v-1", hold_id=hold.hold_id))
    assert voided.available.amount == 5 * DOLLAR
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Capture(
            wallet_pb2.CaptureRequest(request_id="v-cap", hold_id=hold.hold_id, amount=usd(1))
        )
    assert reason_of(caught.value)[0] == "HOLD_VOIDED"


async def test_expired_hold_releases_itself_and_cannot_be_captured(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    hold = await api.stub.Authorize(_authorize(wallet_id, 3 * DOLLAR, "e-auth", ttl_s=10))
    assert await api.available(wallet_id) == 2 * DOLLAR
    api.clock.advance(10_001)
    assert await api.available(wallet_id) == 5 * DOLLAR
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Capture(
            wallet_pb2.CaptureRequest(request_id="e-cap", hold_id=hold.hold_id, amount=usd(1))
        )
    assert reason_of(caught.value)[0] == "HOLD_EXPIRED"


async def test_overcapture_only_when_allowed_and_only_from_free_balance(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    hold = await api.stub.Authorize(_authorize(wallet_id, 2 * DOLLAR, "o-auth"))
    other = await api.stub.Authorize(_authorize(wallet_id, 2 * DOLLAR, "o-other"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.stub.Capture(
            wallet_pb2.CaptureRequest(
                request_id="o-1", hold_id=hold.hold_id, amount=usd(3 * DOLLAR)
            )
        )
    assert reason_of(refused.value)[0] == "CAPTURE_EXCEEDS_HOLD"
    # Free balance is 1: capturing 4 would eat the other hold's reservation.
    with pytest.raises(grpc.aio.AioRpcError) as short:
        await api.stub.Capture(
            wallet_pb2.CaptureRequest(
                request_id="o-2",
                hold_id=hold.hold_id,
                amount=usd(4 * DOLLAR),
                allow_overcapture=True,
            )
        )
    assert reason_of(short.value)[0] == "INSUFFICIENT_FUNDS"
    done = await api.stub.Capture(
        wallet_pb2.CaptureRequest(
            request_id="o-3", hold_id=hold.hold_id, amount=usd(3 * DOLLAR), allow_overcapture=True
        )
    )
    assert done.settlement.charged.amount == 3 * DOLLAR
    assert done.available.amount == 0
    assert other.hold_id


async def test_grants_draw_by_priority_then_expiry(api: WalletApi) -> None:
    wallet_id = await api.wallet()
    expiry_soon = api.clock.now + 3_600_000
    grants = {}
    for name, priority, expires in (
        ("late", 100, None),
        ("soon", 100, expiry_soon),
        ("first", 10, None),
    ):
        request = wallet_pb2.CreateGrantRequest(
            request_id=f"g-{name}",
            wallet=selector(wallet_id),
            kind=wallet_pb2.GRANT_KIND_PROMOTIONAL,
            amount=usd(DOLLAR),
            priority=priority,
        )
        if expires:
            request.expire_time.FromMilliseconds(expires)
        grants[name] = (await api.stub.CreateGrant(request)).grant.grant_id
    await api.stub.Charge(
        wallet_pb2.ChargeRequest(
            request_id="draw", wallet=selector(wallet_id), amount=usd(DOLLAR + DOLLAR // 2)
        )
    )
    listed = await api.stub.ListGrants(wallet_pb2.ListGrantsRequest(wallet=selector(wallet_id)))
    remaining = {g.grant_id: g.remaining.amount for g in listed.grants}
    assert remaining.get(grants["first"], 0) == 0  # exhausted (the Redis view drops it)
    assert remaining[grants["soon"]] == DOLLAR // 2
    assert remaining[grants["late"]] == DOLLAR


async def test_an_expired_grant_is_never_spent(api: WalletApi) -> None:
    wallet_id = await api.wallet()
    request = wallet_pb2.CreateGrantRequest(
        request_id="exp-grant",
        wallet=selector(wallet_id),
        kind=wallet_pb2.GRANT_KIND_PROMOTIONAL,
        amount=usd(5 * DOLLAR),
    )
    request.expire_time.FromMilliseconds(api.clock.now + 1000)
    await api.stub.CreateGrant(request)
    api.clock.advance(1000)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Charge(
            wallet_pb2.ChargeRequest(
                request_id="exp-charge", wallet=selector(wallet_id), amount=usd(1)
            )
        )
    assert reason_of(caught.value)[0] == "INSUFFICIENT_FUNDS"
    assert await api.available(wallet_id) == 0


async def test_frozen_wallet_refuses_spends(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    await api.stub.FreezeWallet(
        wallet_pb2.FreezeWalletRequest(request_id="fr", wallet_id=wallet_id)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Authorize(_authorize(wallet_id, DOLLAR, "fr-auth"))
    assert reason_of(caught.value)[0] == "WALLET_FROZEN"
    await api.stub.UnfreezeWallet(
        wallet_pb2.UnfreezeWalletRequest(request_id="unfr", wallet_id=wallet_id)
    )
    await api.stub.Authorize(_authorize(wallet_id, DOLLAR, "fr-auth-2"))


async def test_overdraft_lets_available_go_to_minus_the_limit_and_no_further(
    api: WalletApi,
) -> None:
    wallet_id = await api.wallet(DOLLAR, overdraft=2 * DOLLAR)
    assert await api.available(wallet_id) == 3 * DOLLAR
    await api.stub.Charge(
        wallet_pb2.ChargeRequest(
            request_id="od-1", wallet=selector(wallet_id), amount=usd(3 * DOLLAR)
        )
    )
    reply = await api.stub.GetWallet(wallet_pb2.GetWalletRequest(wallet=selector(wallet_id)))
    assert reply.wallet.balance.amount == -2 * DOLLAR
    assert reply.wallet.available.amount == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Charge(
            wallet_pb2.ChargeRequest(request_id="od-2", wallet=selector(wallet_id), amount=usd(1))
        )
    assert reason_of(caught.value)[0] == "INSUFFICIENT_FUNDS"


async def test_idempotency_same_request_replays_different_request_is_refused(
    api: WalletApi,
) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    request = _authorize(wallet_id, DOLLAR, "idem-1")
    results = await asyncio.gather(*[api.stub.Authorize(request) for _ in range(20)])
    assert len({r.hold_id for r in results}) == 1
    assert await api.available(wallet_id) == 4 * DOLLAR
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Authorize(_authorize(wallet_id, 2 * DOLLAR, "idem-1"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value)[0] == "IDEMPOTENCY_KEY_REUSED"


async def test_refund_of_a_top_up_within_its_remaining(api: WalletApi) -> None:
    wallet_id = await api.wallet()
    top_up = await api.stub.TopUp(
        wallet_pb2.TopUpRequest(
            request_id="rf-top",
            wallet=selector(wallet_id),
            amount=usd(5 * DOLLAR),
            payment_reference="pay-rf",
        )
    )
    await api.stub.Charge(
        wallet_pb2.ChargeRequest(
            request_id="rf-spend", wallet=selector(wallet_id), amount=usd(2 * DOLLAR)
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.RefundGrant(
            wallet_pb2.RefundGrantRequest(
                request_id="rf-1", grant_id=top_up.grant.grant_id, amount=usd(4 * DOLLAR)
            )
        )
    assert reason_of(caught.value)[0] == "REFUND_EXCEEDS_REMAINING"
    refunded = await api.stub.RefundGrant(
        wallet_pb2.RefundGrantRequest(
            request_id="rf-2", grant_id=top_up.grant.grant_id, amount=usd(3 * DOLLAR)
        )
    )
    assert refunded.wallet.available.amount == 0


@pytest.mark.parametrize(
    ("amount", "field"),
    [(0, "amount"), (-1, "amount"), (2**53, "amount.amount")],
)
async def test_hostile_amounts_name_the_field_and_change_nothing(
    api: WalletApi, amount: int, field: str
) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Authorize(_authorize(wallet_id, amount, f"hostile-{amount}"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(f.startswith(field) for f in field_violations(caught.value)), field_violations(
        caught.value
    )
    assert await api.available(wallet_id) == 5 * DOLLAR


async def test_hostile_references_are_refused(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    with pytest.raises(grpc.aio.AioRpcError) as asset:
        await api.stub.Authorize(
            wallet_pb2.AuthorizeRequest(
                request_id="h-eur",
                wallet=selector(wallet_id),
                amount=money_pb2.Money(asset_code="EUR", amount=1),
            )
        )
    assert asset.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(asset.value)[0] == "ASSET_MISMATCH"
    with pytest.raises(grpc.aio.AioRpcError) as customer:
        await api.stub.CreateWallet(
            wallet_pb2.CreateWalletRequest(
                request_id="h-cust", customer_id="cus_nobody", asset_code=USD
            )
        )
    assert reason_of(customer.value)[0] == "UNKNOWN_CUSTOMER"
    with pytest.raises(grpc.aio.AioRpcError) as unknown_asset:
        await api.stub.CreateWallet(
            wallet_pb2.CreateWalletRequest(
                request_id="h-asset", customer_id=await api.customer(), asset_code="XYZ"
            )
        )
    assert reason_of(unknown_asset.value)[0] == "UNKNOWN_ASSET"
    with pytest.raises(grpc.aio.AioRpcError) as long_id:
        await api.stub.Authorize(_authorize(wallet_id, 1, "x" * 129))
    assert "request_id" in field_violations(long_id.value)
    with pytest.raises(grpc.aio.AioRpcError) as hold:
        await api.stub.Capture(
            wallet_pb2.CaptureRequest(request_id="h-hold", hold_id="hld_nope", amount=usd(1))
        )
    assert reason_of(hold.value)[0] == "UNKNOWN_HOLD"
    assert await api.available(wallet_id) == 5 * DOLLAR

"""Streaming debit over the Meter stream and ExtendHold, over real gRPC on both backends:
CONTINUE until the hold (or the wallet) is used up, overruns only from the free balance,
captures that count the debits, holds kept alive by their debits, and a ledger that verifies
once the write-behind has drained."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from google.rpc.status_pb2 import Status
from obol.wallet.v1 import wallet_pb2

from .harness import WalletApi, selector, usd

DOLLAR = 1_000_000_000
CONTINUE, STOP = wallet_pb2.METER_SIGNAL_CONTINUE, wallet_pb2.METER_SIGNAL_STOP


class Meter:
    """One Meter stream, driven message by message (each answer read before the next)."""

    def __init__(self, api: WalletApi) -> None:
        self.call: Any = api.stub.Meter()
        self.sequence = 0

    async def send(self, **action: Any) -> wallet_pb2.MeterResponse:
        self.sequence += 1
        await self.call.write(wallet_pb2.MeterRequest(sequence=self.sequence, **action))
        reply: wallet_pb2.MeterResponse = await self.call.read()
        assert reply.sequence == self.sequence
        return reply

    async def authorize(self, wallet_id: str, amount: int, ttl_s: int = 60) -> str:
        reply = await self.send(
            authorize=wallet_pb2.AuthorizeRequest(
                request_id=f"auth-{self.sequence + 1}-{id(self)}",
                wallet=selector(wallet_id),
                amount=usd(amount),
                ttl=Duration(seconds=ttl_s),
            )
        )
        return reply.authorize.hold_id

    async def debit(
        self, hold_id: str, amount: int, request_id: str, **fields: Any
    ) -> wallet_pb2.MeterResponse:
        return await self.send(
            debit=wallet_pb2.StreamDebit(
                request_id=request_id, hold_id=hold_id, amount=usd(amount), **fields
            )
        )

    async def close(self) -> None:
        await self.call.done_writing()
        assert await self.call.read() == grpc.aio.EOF


def _reason(status: Status) -> str:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo")


async def _verify(api: WalletApi, wallet_id: str) -> wallet_pb2.VerifyLedgerResponse:
    await api.drain_ledger()
    verified = await api.stub.VerifyLedger(wallet_pb2.VerifyLedgerRequest(wallet_id=wallet_id))
    assert verified.valid, verified.problem
    assert verified.balance_matches
    return verified


async def _kinds(api: WalletApi, hold_id: str) -> list[int]:
    """The hold's entry kinds, sorted (entries at the same time list in entry id order)."""
    listed = await api.stub.ListTransactions(
        wallet_pb2.ListTransactionsRequest(hold_id=hold_id, page_size=100)
    )
    return sorted(t.kind for t in listed.transactions)


async def _hold(api: WalletApi, hold_id: str) -> wallet_pb2.Hold:
    return (await api.stub.GetHold(wallet_pb2.GetHoldRequest(hold_id=hold_id))).hold


async def test_a_stream_continues_until_the_hold_is_used_up(api: WalletApi) -> None:
    wallet_id = await api.wallet(10 * DOLLAR)
    meter = Meter(api)
    hold_id = await meter.authorize(wallet_id, DOLLAR)
    quarter = DOLLAR // 4
    for chunk in range(1, 4):
        reply = await meter.debit(hold_id, quarter, f"chunk-{chunk}", provider_cost=usd(1_000))
        result = reply.debit
        assert (result.signal, result.stop_reason) == (CONTINUE, 0)
        assert result.hold_remaining.amount == DOLLAR - chunk * quarter
        assert result.hold_debited.amount == chunk * quarter
        assert result.settlement.charged.amount == quarter
        assert result.settlement.margin.amount == quarter - 1_000
        assert result.settlement.shortfall.amount == 0
        assert result.available.amount == 9 * DOLLAR
        assert result.transaction_id
    last = (await meter.debit(hold_id, quarter, "chunk-4")).debit
    assert (last.signal, last.stop_reason) == (STOP, wallet_pb2.STOP_REASON_HOLD_EXHAUSTED)
    assert (last.hold_remaining.amount, last.hold_debited.amount) == (0, DOLLAR)

    hold = await _hold(api, hold_id)
    assert hold.state == wallet_pb2.HOLD_STATE_OPEN
    assert (hold.authorized.amount, hold.debited.amount, hold.held.amount) == (DOLLAR, DOLLAR, 0)

    captured = await meter.send(
        capture=wallet_pb2.CaptureRequest(request_id="done", hold_id=hold_id, amount=usd(DOLLAR))
    )
    assert captured.capture.settlement.charged.amount == DOLLAR  # the total for the hold
    assert captured.capture.released.amount == 0
    assert captured.capture.available.amount == 9 * DOLLAR
    await meter.close()

    hold = await _hold(api, hold_id)
    assert hold.state == wallet_pb2.HOLD_STATE_CAPTURED
    assert (hold.captured.amount, hold.debited.amount, hold.held.amount) == (DOLLAR, DOLLAR, 0)
    verified = await _verify(api, wallet_id)
    assert verified.live_balance.amount == 9 * DOLLAR
    assert await _kinds(api, hold_id) == sorted(
        [
            wallet_pb2.TRANSACTION_KIND_HOLD,
            *[wallet_pb2.TRANSACTION_KIND_DEBIT] * 4,
            wallet_pb2.TRANSACTION_KIND_CAPTURE,
        ]
    )


async def test_an_overrun_draws_only_on_the_free_balance(api: WalletApi) -> None:
    wallet_id = await api.wallet(DOLLAR)
    meter = Meter(api)
    hold_id = await meter.authorize(wallet_id, 3 * DOLLAR // 10)
    other = await api.stub.Authorize(
        wallet_pb2.AuthorizeRequest(
            request_id="other", wallet=selector(wallet_id), amount=usd(DOLLAR // 2)
        )
    )
    result = (await meter.debit(hold_id, 6 * DOLLAR // 10, "big")).debit
    assert (result.signal, result.stop_reason) == (STOP, wallet_pb2.STOP_REASON_WALLET_EXHAUSTED)
    assert result.settlement.charged.amount == DOLLAR // 2  # 0.3 held + the 0.2 free
    assert result.settlement.shortfall.amount == DOLLAR // 10
    assert (result.hold_remaining.amount, result.available.amount) == (0, 0)
    await meter.close()

    done = await api.stub.Capture(  # the other call's reservation was never touched
        wallet_pb2.CaptureRequest(
            request_id="other-done", hold_id=other.hold_id, amount=usd(DOLLAR // 2)
        )
    )
    assert (done.settlement.charged.amount, done.available.amount) == (DOLLAR // 2, 0)
    verified = await _verify(api, wallet_id)
    assert verified.live_balance.amount == 0


async def test_a_capture_counts_the_debits_and_reverses_their_excess(api: WalletApi) -> None:
    wallet_id = await api.wallet(DOLLAR)
    meter = Meter(api)
    rest_hold = await meter.authorize(wallet_id, 3 * DOLLAR // 10)
    await meter.debit(rest_hold, DOLLAR // 10, "r-1")
    rest = await meter.send(
        capture=wallet_pb2.CaptureRequest(
            request_id="r-done", hold_id=rest_hold, amount=usd(DOLLAR // 4)
        )
    )
    assert rest.capture.settlement.charged.amount == DOLLAR // 4
    assert rest.capture.released.amount == DOLLAR // 20
    assert rest.capture.available.amount == 3 * DOLLAR // 4

    over_hold = await meter.authorize(wallet_id, 3 * DOLLAR // 10)
    await meter.debit(over_hold, DOLLAR // 5, "o-1")
    over = await meter.send(
        capture=wallet_pb2.CaptureRequest(
            request_id="o-done", hold_id=over_hold, amount=usd(DOLLAR // 20)
        )
    )
    assert over.capture.settlement.charged.amount == DOLLAR // 20
    assert over.capture.released.amount == DOLLAR // 10
    assert over.capture.available.amount == 3 * DOLLAR // 4 - DOLLAR // 20
    await meter.close()

    verified = await _verify(api, wallet_id)
    assert verified.live_balance.amount == 3 * DOLLAR // 4 - DOLLAR // 20
    assert await _kinds(api, over_hold) == sorted(
        [
            wallet_pb2.TRANSACTION_KIND_HOLD,
            wallet_pb2.TRANSACTION_KIND_DEBIT,
            wallet_pb2.TRANSACTION_KIND_REVERSAL,
            wallet_pb2.TRANSACTION_KIND_CAPTURE,
        ]
    )
    reversal = (
        await api.stub.ListTransactions(
            wallet_pb2.ListTransactionsRequest(
                wallet_id=wallet_id,
                kinds=[wallet_pb2.TRANSACTION_KIND_REVERSAL],
                view=wallet_pb2.TRANSACTION_VIEW_FULL,
            )
        )
    ).transactions[0]
    assert over.capture.transaction_id != reversal.transaction_id
    amounts = sorted(line.amount.amount for line in reversal.lines)
    assert amounts == [-(DOLLAR // 5 - DOLLAR // 20), DOLLAR // 5 - DOLLAR // 20]


async def test_debits_keep_a_hold_alive_and_a_quiet_hold_expires(api: WalletApi) -> None:
    wallet_id = await api.wallet(DOLLAR)
    meter = Meter(api)
    streaming = await meter.authorize(wallet_id, DOLLAR // 2, ttl_s=10)
    quiet = await meter.authorize(wallet_id, DOLLAR // 10, ttl_s=10)
    for chunk in range(5):  # 40 s of chunks on a 10 s TTL
        api.clock.advance(8_000)
        result = (await meter.debit(streaming, 1_000, f"k-{chunk}")).debit
        assert result.signal == CONTINUE
        assert result.expire_time.ToMilliseconds() == api.clock.now + 10_000

    hold = await _hold(api, streaming)
    assert hold.state == wallet_pb2.HOLD_STATE_OPEN
    assert hold.ttl.ToMilliseconds() == 10_000
    assert hold.expire_time.ToMilliseconds() == api.clock.now + 10_000
    assert (hold.debited.amount, hold.held.amount) == (5_000, DOLLAR // 2 - 5_000)
    assert (await _hold(api, quiet)).state == wallet_pb2.HOLD_STATE_EXPIRED
    late = await meter.debit(quiet, 1_000, "late")
    assert late.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert _reason(late.error) == "HOLD_EXPIRED"

    api.clock.advance(10_000)  # the stream went quiet
    hold = await _hold(api, streaming)
    assert (hold.state, hold.debited.amount, hold.held.amount) == (
        wallet_pb2.HOLD_STATE_EXPIRED,
        5_000,
        0,
    )
    await meter.close()
    verified = await _verify(api, wallet_id)
    assert verified.live_balance.amount == DOLLAR - 5_000
    assert verified.live_held.amount == 0


async def test_a_repeated_debit_replays_and_a_reused_request_id_is_refused(
    api: WalletApi,
) -> None:
    wallet_id = await api.wallet(DOLLAR)
    meter = Meter(api)
    hold_id = await meter.authorize(wallet_id, DOLLAR // 2)
    first = (await meter.debit(hold_id, 1_000, "same")).debit
    again = (await meter.debit(hold_id, 1_000, "same")).debit
    assert again == first
    reused = await meter.debit(hold_id, 2_000, "same")
    assert reused.error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert _reason(reused.error) == "IDEMPOTENCY_KEY_REUSED"
    invalid = await meter.debit(hold_id, 0, "zero")  # answered; the stream goes on
    assert invalid.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert (await _hold(api, hold_id)).debited.amount == 1_000
    await meter.close()
    await _verify(api, wallet_id)


async def test_a_frozen_wallet_says_stop(api: WalletApi) -> None:
    wallet_id = await api.wallet(DOLLAR)
    meter = Meter(api)
    hold_id = await meter.authorize(wallet_id, DOLLAR // 2)
    await api.stub.FreezeWallet(
        wallet_pb2.FreezeWalletRequest(request_id="freeze", wallet_id=wallet_id)
    )
    result = (await meter.debit(hold_id, 1_000, "f-1")).debit
    assert (result.signal, result.stop_reason) == (STOP, wallet_pb2.STOP_REASON_WALLET_FROZEN)
    assert result.settlement.charged.amount == 1_000  # reserved before the freeze
    await meter.close()
    await _verify(api, wallet_id)


async def test_extend_hold_pushes_the_expiry_and_reserves_more(api: WalletApi) -> None:
    wallet_id = await api.wallet(DOLLAR)
    meter = Meter(api)
    hold_id = await meter.authorize(wallet_id, DOLLAR // 4, ttl_s=10)
    used_up = (await meter.debit(hold_id, DOLLAR // 4, "e-1")).debit
    assert used_up.stop_reason == wallet_pb2.STOP_REASON_HOLD_EXHAUSTED
    api.clock.advance(9_000)
    extended = await api.stub.ExtendHold(
        wallet_pb2.ExtendHoldRequest(
            request_id="x-1",
            hold_id=hold_id,
            ttl=Duration(seconds=120),
            increase_by=usd(DOLLAR // 4),
        )
    )
    hold = extended.hold
    assert hold.state == wallet_pb2.HOLD_STATE_OPEN
    assert (hold.authorized.amount, hold.debited.amount, hold.held.amount) == (
        DOLLAR // 2,
        DOLLAR // 4,
        DOLLAR // 4,
    )
    assert hold.ttl.ToMilliseconds() == 120_000
    assert hold.expire_time.ToMilliseconds() == api.clock.now + 120_000
    assert extended.available.amount == DOLLAR // 2

    api.clock.advance(100_000)  # past the first TTL, within the new one
    go_on = (await meter.debit(hold_id, DOLLAR // 8, "e-2")).debit
    assert (go_on.signal, go_on.expire_time.ToMilliseconds()) == (
        CONTINUE,
        api.clock.now + 120_000,
    )
    on_stream = await meter.send(
        extend_hold=wallet_pb2.ExtendHoldRequest(
            request_id="x-2", hold_id=hold_id, ttl=Duration(seconds=30), increase_by=usd(DOLLAR)
        )
    )
    assert on_stream.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert _reason(on_stream.error) == "INSUFFICIENT_FUNDS"
    plain = await meter.send(
        extend_hold=wallet_pb2.ExtendHoldRequest(
            request_id="x-3", hold_id=hold_id, ttl=Duration(seconds=30)
        )
    )
    assert plain.extend_hold.hold.ttl.ToMilliseconds() == 30_000
    assert plain.extend_hold.hold.expire_time == go_on.expire_time  # never earlier
    await meter.send(void_hold=wallet_pb2.VoidRequest(request_id="v", hold_id=hold_id))
    await meter.close()

    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await api.stub.ExtendHold(
            wallet_pb2.ExtendHoldRequest(request_id="x-4", hold_id=hold_id, ttl=Duration(seconds=1))
        )
    assert closed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    verified = await _verify(api, wallet_id)
    assert verified.live_balance.amount == DOLLAR - DOLLAR // 4 - DOLLAR // 8


async def test_concurrent_streams_on_one_hold_never_overdraw(api: WalletApi) -> None:
    wallet_id = await api.wallet(1_000)
    setup = Meter(api)
    hold_id = await setup.authorize(wallet_id, 400)
    other = await setup.authorize(wallet_id, 300)
    await setup.close()

    async def stream(n: int) -> list[wallet_pb2.StreamDebitResult]:
        meter = Meter(api)
        results = [(await meter.debit(hold_id, 7, f"s{n}-{i}")).debit for i in range(10)]
        await meter.close()
        return results

    results = [r for batch in await asyncio.gather(*(stream(n) for n in range(20))) for r in batch]
    assert sum(r.settlement.charged.amount for r in results) == 700
    assert sum(r.settlement.shortfall.amount for r in results) == 200 * 7 - 700
    assert sum(r.signal == CONTINUE for r in results) == 400 // 7
    assert max(r.hold_debited.amount for r in results) == 400
    assert await api.available(wallet_id) == 0
    assert (await _hold(api, other)).held.amount == 300
    verified = await _verify(api, wallet_id)
    assert (verified.live_balance.amount, verified.live_held.amount) == (300, 300)

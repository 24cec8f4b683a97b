"""Streaming debit and hold extension on the Redis backend: chunks drawn from an open hold at
once, overruns only from the free balance, expiry pushed by each debit, capture totals that
count the debits (a reversal when lower), idempotency and races."""

from __future__ import annotations

import dataclasses

import pytest

from obol_core.idempotency import IdempotencyKeyReused
from obol_core.ids import new_id
from obol_wallet.errors import (
    HoldAlreadyCaptured,
    HoldExpired,
    HoldVoided,
    InsufficientFunds,
    UnknownHold,
    WalletFrozen,
)
from obol_wallet.model import (
    CostRecord,
    DebitRequest,
    DebitResult,
    EntryKind,
    ExtendHoldRequest,
    ExtendHoldResult,
    GrantKind,
    HoldState,
    Idempotency,
    StopReason,
)
from obol_wallet.partitions import hold_id_for, reversal_grant_id

from .helpers import USD, Harness, idem, snapshot_from
from .test_races import settle_all


def _wallet_of(hold_id: str) -> str:
    return "wal_" + hold_id.removeprefix("hld_")[:26]


def debit_request(
    h: Harness,
    hold_id: str,
    amount: int,
    *,
    cost: CostRecord | None = None,
    request: Idempotency | None = None,
) -> DebitRequest:
    return DebitRequest(
        idem=request or idem(payload=f"debit{amount}"),
        wallet_id=_wallet_of(hold_id),
        hold_id=hold_id,
        entry_id=new_id("txn"),
        amount=amount,
        now_ms=h.now,
        cost=cost,
    )


async def debit(h: Harness, hold_id: str, amount: int, **options: object) -> DebitResult:
    return await h.backend.debit(debit_request(h, hold_id, amount, **options))  # type: ignore[arg-type]


async def extend(h: Harness, hold_id: str, ttl_ms: int, increase_by: int = 0) -> ExtendHoldResult:
    return await h.backend.extend_hold(
        ExtendHoldRequest(
            idem=idem(payload=f"extend{ttl_ms}/{increase_by}"),
            wallet_id=_wallet_of(hold_id),
            hold_id=hold_id,
            entry_id=new_id("txn"),
            ttl_ms=ttl_ms,
            increase_by=increase_by,
            now_ms=h.now,
        )
    )


async def test_a_debit_draws_from_the_hold_at_once(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 600)
    result = await debit(h, hold.hold_id, 250, cost=CostRecord("EUR", 40))
    assert (result.charged, result.shortfall) == (250, 0)
    assert (result.hold_remaining, result.hold_debited) == (350, 250)
    assert result.stop_reason is None
    assert result.balance.active == 750
    assert result.balance.held == 350
    assert result.balance.available == 400  # unchanged: the chunk was reserved
    (message,) = [m for m in await h.messages(w) if m.op.value == "debit"]
    (entry,) = message.entries
    assert entry.kind is EntryKind.DEBIT
    assert entry.entry_id == result.entry_ids[-1]
    lines = {line.account: line.amount for line in entry.lines}
    (grant_id,) = [d.grant_id for d in result.draws]
    assert lines == {
        f"wallet:{w}:grant:{grant_id}": -250,
        f"revenue:{USD}": 250,
        "cost:EUR": 40,
        "provider_payable:EUR": -40,
    }
    (row,) = message.holds
    assert (row.hold.state, row.hold.debited, row.hold.authorized) == (HoldState.OPEN, 250, 600)
    stored = await h.backend.hold(w, hold.hold_id, h.now)
    assert (stored.debited, stored.authorized, stored.ttl_ms) == (250, 600, 60_000)
    await h.check(w)


async def test_the_debit_that_uses_the_hold_up_says_hold_exhausted(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 300)
    first = await debit(h, hold.hold_id, 200)
    assert first.stop_reason is None
    last = await debit(h, hold.hold_id, 100)
    assert (last.charged, last.shortfall, last.hold_remaining) == (100, 0, 0)
    assert last.stop_reason is StopReason.HOLD_EXHAUSTED
    assert last.balance.available == 700
    await h.check(w)


async def test_an_overrun_draws_only_on_the_free_balance(h: Harness) -> None:
    w = await h.wallet(1_000)
    streaming = await h.authorize(w, 300)
    other = await h.authorize(w, 500)  # another call's reservation: never touched
    result = await debit(h, streaming.hold_id, 600)
    # 300 from the hold, 200 of the 300 overrun from the free balance, 100 short.
    assert (result.charged, result.shortfall) == (500, 100)
    assert (result.hold_remaining, result.hold_debited) == (0, 300)
    assert result.stop_reason is StopReason.WALLET_EXHAUSTED
    balance = result.balance
    assert (balance.active, balance.held, balance.available) == (500, 500, 0)
    assert (await h.backend.hold(w, other.hold_id, h.now)).authorized == 500
    assert (await h.capture(other.hold_id, 500)).charged == 500  # still fully backed
    await h.check(w)


async def test_a_covered_overrun_stops_on_the_hold(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 300)
    result = await debit(h, hold.hold_id, 450)
    assert (result.charged, result.shortfall, result.hold_remaining) == (450, 0, 0)
    assert result.stop_reason is StopReason.HOLD_EXHAUSTED
    assert result.balance.available == 550
    await h.check(w)


async def test_an_overrun_may_use_the_overdraft_never_past_its_limit(h: Harness) -> None:
    w = await h.wallet(100, overdraft_limit=50)
    hold = await h.authorize(w, 100)
    result = await debit(h, hold.hold_id, 200)
    assert (result.charged, result.shortfall, result.overdraft_drawn) == (150, 50, 50)
    assert result.balance.overdraft_used == -50
    assert result.balance.available == 0
    await h.check(w)


async def test_nothing_left_charges_nothing_and_says_stop(h: Harness) -> None:
    w = await h.wallet(300)
    hold = await h.authorize(w, 300)
    await debit(h, hold.hold_id, 300)
    result = await debit(h, hold.hold_id, 40, cost=CostRecord(USD, 10))
    assert (result.charged, result.shortfall, result.draws) == (0, 40, ())
    assert result.stop_reason is StopReason.WALLET_EXHAUSTED
    entry = (await h.messages(w))[-1].entries[-1]
    # The chunk's provider cost was still incurred: recorded, nothing charged for it.
    assert {line.account: line.amount for line in entry.lines} == {
        f"cost:{USD}": 10,
        f"provider_payable:{USD}": -10,
    }
    await h.check(w)


async def test_a_frozen_wallet_debits_within_the_hold_and_says_stop(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 300)
    await h.settings(w, frozen=True)
    within = await debit(h, hold.hold_id, 100)
    assert (within.charged, within.shortfall) == (100, 0)
    assert within.stop_reason is StopReason.WALLET_FROZEN
    beyond = await debit(h, hold.hold_id, 500)  # the free balance is not lent when frozen
    assert (beyond.charged, beyond.shortfall, beyond.hold_remaining) == (200, 300, 0)
    assert beyond.stop_reason is StopReason.WALLET_FROZEN
    assert beyond.balance.available == 700
    await h.check(w)


async def test_debits_keep_a_hold_alive_past_its_ttl(h: Harness) -> None:
    w = await h.wallet(1_000)
    streaming = await h.authorize(w, 500, ttl_ms=10_000)
    idle = await h.authorize(w, 100, ttl_ms=10_000)
    for _ in range(5):  # 40 s of chunks, every 8 s, on a 10 s TTL
        h.advance(8_000)
        result = await debit(h, streaming.hold_id, 50)
        assert result.expires_ms == h.now + 10_000
    with pytest.raises(HoldExpired):
        await debit(h, idle.hold_id, 10)  # no debits: expired at 10 s
    hold = await h.backend.hold(w, streaming.hold_id, h.now)
    assert (hold.state, hold.debited, hold.expires_ms) == (HoldState.OPEN, 250, h.now + 10_000)

    h.advance(10_000)  # the stream went quiet: the rest of the reservation is released
    hold = await h.backend.hold(w, streaming.hold_id, h.now)
    assert (hold.state, hold.debited) == (HoldState.EXPIRED, 250)
    balance = await h.backend.balance(w, h.now)
    assert (balance.active, balance.held, balance.available) == (750, 0, 750)
    await h.check(w)


async def test_capture_after_debits_charges_only_the_rest(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 600)
    await debit(h, hold.hold_id, 250)
    result = await h.capture(hold.hold_id, 400)
    assert (result.charged, result.released, result.reversed) == (400, 200, 0)
    assert sum(d.amount for d in result.draws) == 150
    assert result.balance.available == 600
    captured = await h.backend.hold(w, hold.hold_id, h.now)
    assert (captured.state, captured.captured, captured.debited) == (HoldState.CAPTURED, 400, 250)
    entry = (await h.messages(w))[-1].entries[-1]
    assert entry.kind is EntryKind.CAPTURE
    assert {line.account: line.amount for line in entry.lines}[f"revenue:{USD}"] == 150
    await h.check(w)


async def test_capture_beyond_the_rest_needs_overcapture(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 300)
    await debit(h, hold.hold_id, 200)
    result = await h.capture(hold.hold_id, 450, allow_overcapture=True)
    assert (result.charged, result.released) == (450, 0)
    assert sum(d.amount for d in result.draws) == 250
    assert result.balance.available == 550
    await h.check(w)


async def test_a_capture_below_the_debits_reverses_the_difference(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 600)
    await debit(h, hold.hold_id, 500)
    capture_request = h.capture_request(hold.hold_id, 350)
    result = await h.backend.capture(capture_request)
    assert (result.charged, result.released, result.reversed, result.draws) == (350, 100, 150, ())
    assert result.balance.available == 650
    reversal, capture = (await h.messages(w))[-1].entries
    assert (reversal.kind, capture.kind) == (EntryKind.REVERSAL, EntryKind.CAPTURE)
    assert result.entry_ids[-1] == capture.entry_id == capture_request.entry_id
    grant_id = reversal_grant_id(w, capture_request.entry_id)
    assert {line.account: line.amount for line in reversal.lines} == {
        f"revenue:{USD}": -150,
        f"wallet:{w}:grant:{grant_id}": 150,
    }
    assert reversal.memo == {"hold_id": hold.hold_id, "grant_id": grant_id}
    grants = {g.grant_id: g for g in await h.backend.grants(w, h.now)}
    assert (grants[grant_id].kind, grants[grant_id].remaining) == (GrantKind.ADJUSTMENT, 150)
    captured = await h.backend.hold(w, hold.hold_id, h.now)
    assert (captured.captured, captured.debited) == (350, 500)
    await h.check(w)


async def test_a_reversal_repays_the_overdraft_first(h: Harness) -> None:
    w = await h.wallet(0, overdraft_limit=500)
    hold = await h.authorize(w, 300)
    drawn = await debit(h, hold.hold_id, 300)
    assert drawn.overdraft_drawn == 300
    result = await h.capture(hold.hold_id, 100)
    assert result.reversed == 200
    assert (result.balance.overdraft_used, result.balance.active) == (-100, 0)
    assert await h.backend.grants(w, h.now) == []  # wholly spent on the overdraft
    await h.check(w)


async def test_void_after_debits_releases_only_the_rest(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 600)
    await debit(h, hold.hold_id, 250)
    result = await h.void(hold.hold_id)
    assert (result.balance.active, result.balance.held, result.balance.available) == (750, 0, 750)
    await h.check(w)


async def test_a_debit_on_a_closed_hold_is_refused(h: Harness) -> None:
    w = await h.wallet(1_000)
    captured = await h.authorize(w, 100)
    await h.capture(captured.hold_id, 100)
    voided = await h.authorize(w, 100)
    await h.void(voided.hold_id)
    expired = await h.authorize(w, 100, ttl_ms=1_000)
    h.advance(1_000)
    with pytest.raises(HoldAlreadyCaptured):
        await debit(h, captured.hold_id, 1)
    with pytest.raises(HoldVoided):
        await debit(h, voided.hold_id, 1)
    with pytest.raises(HoldExpired):
        await debit(h, expired.hold_id, 1)
    with pytest.raises(UnknownHold):
        await debit(h, hold_id_for(w, "0" * 26), 1)
    await h.check(w)


async def test_a_debit_replays_and_a_reused_request_id_is_refused(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 300)
    request = debit_request(h, hold.hold_id, 120)
    first = await h.backend.debit(request)
    h.advance(1_000)
    again = await h.backend.debit(dataclasses.replace(request, now_ms=h.now))
    assert again.replayed
    assert dataclasses.replace(again, replayed=False) == first
    other = debit_request(h, hold.hold_id, 7, request=idem(request.idem.request_id, "other"))
    with pytest.raises(IdempotencyKeyReused):
        await h.backend.debit(other)
    hold_now = await h.backend.hold(w, hold.hold_id, h.now)
    assert hold_now.debited == 120
    assert len([m for m in await h.messages(w) if m.op.value == "debit"]) == 1
    await h.check(w)


async def test_extend_hold_pushes_the_expiry_and_sets_the_ttl(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 100, ttl_ms=10_000)
    h.advance(8_000)
    result = await extend(h, hold.hold_id, 60_000)
    assert (result.expires_ms, result.ttl_ms, result.authorized) == (h.now + 60_000, 60_000, 100)
    assert result.entry_ids == ()  # no money moved: no entry
    assert result.hold.state is HoldState.OPEN
    shorter = await extend(h, hold.hold_id, 1_000)  # never earlier than it was
    assert (shorter.expires_ms, shorter.ttl_ms) == (result.expires_ms, 1_000)
    h.advance(30_000)
    chunk = await debit(h, hold.hold_id, 10)
    assert chunk.expires_ms == result.expires_ms  # now + 1 s is earlier: kept
    await h.check(w)


async def test_extend_hold_reserves_more_if_available_covers_it(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 300)
    await debit(h, hold.hold_id, 300)
    result = await extend(h, hold.hold_id, 60_000, increase_by=400)
    assert (result.authorized, result.debited) == (700, 300)
    assert (result.balance.held, result.balance.available) == (400, 300)
    (entry,) = (await h.messages(w))[-1].entries
    assert (entry.kind, entry.lines) == (EntryKind.HOLD, [])
    assert entry.memo == {"hold_id": hold.hold_id, "increase_by": "400"}
    with pytest.raises(InsufficientFunds) as refused:
        await extend(h, hold.hold_id, 60_000, increase_by=301)
    assert refused.value.metadata["available"] == "300"
    follow = await debit(h, hold.hold_id, 400)
    assert (follow.charged, follow.hold_remaining) == (400, 0)
    await h.settings(w, frozen=True)
    with pytest.raises(WalletFrozen):
        await extend(h, hold.hold_id, 60_000, increase_by=1)
    await extend(h, hold.hold_id, 60_000)  # extending alone moves no money: allowed
    await h.check(w)


async def test_extend_hold_is_refused_on_a_closed_hold(h: Harness) -> None:
    w = await h.wallet(1_000)
    captured = await h.authorize(w, 100)
    await h.capture(captured.hold_id, 50)
    expired = await h.authorize(w, 100, ttl_ms=1_000)
    h.advance(1_000)
    with pytest.raises(HoldAlreadyCaptured):
        await extend(h, captured.hold_id, 60_000)
    with pytest.raises(HoldExpired):
        await extend(h, expired.hold_id, 60_000, increase_by=10)
    await h.check(w)


async def test_a_rebuild_keeps_debits_and_the_ttl(h: Harness) -> None:
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 500, ttl_ms=10_000)
    await debit(h, hold.hold_id, 200)
    await extend(h, hold.hold_id, 20_000)
    before = await h.backend.hold(w, hold.hold_id, h.now)
    before_balance = await h.backend.balance(w, h.now)
    messages = await h.messages(w)
    await h.backend.drop_hot_state(w)
    assert await h.backend.hydrate(snapshot_from(messages), now_ms=h.now)
    assert await h.backend.hold(w, hold.hold_id, h.now) == before
    assert await h.backend.balance(w, h.now) == before_balance
    h.advance(15_000)
    result = await debit(h, hold.hold_id, 300)
    assert (result.hold_remaining, result.expires_ms) == (0, h.now + 20_000)
    await h.check(w)


async def test_concurrent_debits_on_one_hold_never_overdraw(pooled: Harness) -> None:
    h = pooled
    w = await h.wallet(1_000)
    hold = await h.authorize(w, 400)
    other = await h.authorize(w, 300)
    results = await settle_all(debit(h, hold.hold_id, 7) for _ in range(200))
    debits = [r for r in results if isinstance(r, DebitResult)]
    assert len(debits) == 200
    charged = sum(r.charged for r in debits)
    assert charged == 700  # 400 reserved + 300 free; the other hold's 300 untouched
    assert sum(r.shortfall for r in debits) == 200 * 7 - 700
    assert max(r.hold_debited for r in debits) == 400
    assert sum(r.stop_reason is None for r in debits) == 400 // 7  # the ones before the end
    balance = await h.backend.balance(w, h.now)
    assert (balance.active, balance.held, balance.available) == (300, 300, 0)
    assert (await h.backend.hold(w, other.hold_id, h.now)).authorized == 300
    await h.check(w)

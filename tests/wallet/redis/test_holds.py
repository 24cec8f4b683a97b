"""Authorize, capture, void and hold expiry: each hold resolves exactly once."""

from __future__ import annotations

import dataclasses

import pytest

from obol_core.ids import new_ulid
from obol_wallet.errors import (
    CaptureExceedsHold,
    ExternalIdTaken,
    HoldAlreadyCaptured,
    HoldExpired,
    HoldVoided,
    InsufficientFunds,
    UnknownHold,
    WalletFrozen,
)
from obol_wallet.model import CostRecord, Draw, EntryKind, HoldState
from obol_wallet.partitions import hold_id_for

from .helpers import USD, Harness


async def test_authorize_reserves_and_counts_holds(h: Harness) -> None:
    w = await h.wallet(5_000)
    for _ in range(5):
        await h.authorize(w, 1_000)
    with pytest.raises(InsufficientFunds) as refused:
        await h.authorize(w, 1_000)  # six holds of 1,000 on 5,000: the sixth is refused
    assert refused.value.metadata == {
        "wallet_id": w,
        "asset_code": USD,
        "available": "0",
        "required": "1000",
    }
    balance = await h.backend.balance(w, h.now)
    assert (balance.active, balance.held, balance.available) == (5_000, 5_000, 0)
    await h.check(w)


async def test_authorize_result(h: Harness) -> None:
    w = await h.wallet(100)
    result = await h.authorize(w, 30, ttl_ms=5_000)
    assert result.held == 30
    assert result.expires_ms == h.now + 5_000
    assert result.balance.available == 70
    assert not result.replayed
    hold = await h.backend.hold(w, result.hold_id, h.now)
    assert hold.state is HoldState.OPEN
    assert (hold.authorized, hold.captured, hold.expires_ms) == (30, 0, h.now + 5_000)
    (message,) = [m for m in await h.messages(w) if m.op.value == "authorize"]
    (entry,) = message.entries
    assert entry.kind is EntryKind.HOLD and entry.lines == []
    assert entry.memo == {"model": "gpt-test", "hold_id": result.hold_id}


async def test_capture_less_releases_the_rest(h: Harness) -> None:
    w = await h.wallet(100)
    hold = await h.authorize(w, 60)
    result = await h.capture(hold.hold_id, 25, cost=CostRecord("EUR", 7))
    assert (result.charged, result.released, result.overdraft_drawn) == (25, 35, 0)
    assert result.balance.available == 75
    assert (await h.backend.hold(w, hold.hold_id, h.now)).state is HoldState.CAPTURED
    capture = next(m for m in await h.messages(w) if m.op.value == "capture")
    lines = {(line.account, line.asset_code): line.amount for line in capture.entries[0].lines}
    assert lines[(f"revenue:{USD}", USD)] == 25
    assert lines[("cost:EUR", "EUR")] == 7
    assert lines[("provider_payable:EUR", "EUR")] == -7
    await h.check(w)


async def test_capture_zero_releases_everything(h: Harness) -> None:
    w = await h.wallet(100)
    hold = await h.authorize(w, 60)
    result = await h.capture(hold.hold_id, 0)
    assert (result.charged, result.released, result.draws) == (0, 60, ())
    assert result.balance.available == 100
    await h.check(w)


async def test_overcapture_needs_the_policy(h: Harness) -> None:
    w = await h.wallet(100)
    hold = await h.authorize(w, 40)
    with pytest.raises(CaptureExceedsHold) as refused:
        await h.capture(hold.hold_id, 50)
    assert refused.value.metadata == {
        "hold_id": hold.hold_id,
        "asset_code": USD,
        "held": "40",
        "required": "50",
    }
    result = await h.capture(hold.hold_id, 50, allow_overcapture=True)
    assert (result.charged, result.released) == (50, 0)
    assert result.balance.available == 50
    await h.check(w)


async def test_overcapture_draws_only_the_free_balance(h: Harness) -> None:
    w = await h.wallet(100)
    mine = await h.authorize(w, 40)
    await h.authorize(w, 50)  # someone else's reservation: not for my overrun
    with pytest.raises(InsufficientFunds) as refused:
        await h.capture(mine.hold_id, 51, allow_overcapture=True)  # free is 10
    assert refused.value.metadata["available"] == "50"  # its 40 + the free 10
    assert refused.value.metadata["required"] == "51"
    result = await h.capture(mine.hold_id, 50, allow_overcapture=True)
    assert result.balance.available == 0
    assert result.balance.held == 50
    await h.check(w)


async def test_each_hold_resolves_once(h: Harness) -> None:
    w = await h.wallet(100)
    captured = await h.authorize(w, 10)
    await h.capture(captured.hold_id, 10)
    with pytest.raises(HoldAlreadyCaptured):
        await h.capture(captured.hold_id, 10)
    with pytest.raises(HoldAlreadyCaptured):
        await h.void(captured.hold_id)

    voided = await h.authorize(w, 10)
    await h.void(voided.hold_id)
    with pytest.raises(HoldVoided):
        await h.capture(voided.hold_id, 5)
    with pytest.raises(HoldVoided):
        await h.void(voided.hold_id)
    assert (await h.backend.hold(w, voided.hold_id, h.now)).state is HoldState.VOIDED

    expired = await h.authorize(w, 10, ttl_ms=1_000)
    h.advance(1_000)  # expiry is inclusive: at expires_ms it is gone
    with pytest.raises(HoldExpired):
        await h.capture(expired.hold_id, 5)
    with pytest.raises(HoldExpired):
        await h.void(expired.hold_id)
    assert (await h.backend.hold(w, expired.hold_id, h.now)).state is HoldState.EXPIRED

    unknown = hold_id_for(w, new_ulid())
    with pytest.raises(UnknownHold):
        await h.capture(unknown, 1)
    with pytest.raises(UnknownHold):
        await h.backend.hold(w, unknown, h.now)
    other_wallet = await h.wallet(10)
    with pytest.raises(UnknownHold):  # the hold id names another wallet
        await h.backend.hold(other_wallet, captured.hold_id, h.now)
    assert await h.available(w) == 90
    await h.check(w)


async def test_expired_hold_releases_itself_lazily(h: Harness) -> None:
    w = await h.wallet(100)
    hold = await h.authorize(w, 70, ttl_ms=10_000)
    h.advance(9_999)
    assert await h.available(w) == 30
    h.advance(1)
    assert await h.available(w) == 100  # no sweeper: settled by the read itself
    releases = [e for m in await h.messages(w) for e in m.entries if e.kind is EntryKind.RELEASE]
    assert [e.memo for e in releases] == [{"hold_id": hold.hold_id, "reason": "expired"}]
    assert releases[0].lines == []
    rows = [
        row for m in await h.messages(w) for row in m.holds if row.hold.state.value == "expired"
    ]
    assert rows[0].closed_ms == hold.expires_ms
    await h.check(w)


async def test_frozen_wallet_refuses_new_spends_but_settles_holds(h: Harness) -> None:
    w = await h.wallet(100)
    to_capture = await h.authorize(w, 30)
    to_void = await h.authorize(w, 30)
    await h.settings(w, frozen=True)
    with pytest.raises(WalletFrozen):
        await h.authorize(w, 1)
    with pytest.raises(WalletFrozen):
        await h.charge(w, 1)
    with pytest.raises(WalletFrozen):  # beyond the reservation is a new spend
        await h.capture(to_capture.hold_id, 31, allow_overcapture=True)
    assert (await h.capture(to_capture.hold_id, 30)).charged == 30
    await h.void(to_void.hold_id)
    balance = await h.backend.balance(w, h.now)
    assert balance.frozen and balance.available == 70
    await h.settings(w, frozen=False)
    assert (await h.charge(w, 70)).balance.available == 0
    await h.check(w)


async def test_charge_draws_and_records_cost(h: Harness) -> None:
    w = await h.wallet(100)
    result = await h.charge(w, 40)
    assert (result.hold_id, result.charged, result.released) == ("", 40, 0)
    assert len(result.draws) == 1 and result.draws[0].amount == 40
    with pytest.raises(InsufficientFunds):
        await h.charge(w, 61)
    await h.check(w)


async def test_captures_draw_the_overdraft_within_its_limit(h: Harness) -> None:
    w = await h.wallet(100, overdraft_limit=50)
    hold = await h.authorize(w, 150)
    with pytest.raises(InsufficientFunds):
        await h.authorize(w, 1)
    result = await h.capture(hold.hold_id, 130)
    assert result.overdraft_drawn == 30
    assert [d.amount for d in result.draws] == [100]
    assert (result.balance.active, result.balance.overdraft_used) == (0, -30)
    assert result.balance.available == 20
    assert (await h.charge(w, 20)).balance.overdraft_used == -50
    with pytest.raises(InsufficientFunds):
        await h.charge(w, 1)
    await h.check(w)


async def test_draw_amounts_are_reported(h: Harness) -> None:
    w = await h.wallet(10)
    grant = await h.grant(w, 10, priority=200)
    result = await h.charge(w, 15)
    first = result.draws[0]
    assert result.draws == (first, Draw(grant.grant_id, 5))
    await h.check(w)


async def test_credits_expiring_under_an_open_hold_are_not_spent_by_it(h: Harness) -> None:
    """Expiry takes the whole remainder (an expired grant is never spent). A hold that
    relied on it then captures only from what is left: up to the free balance plus its
    reservation, never from the overdraft beyond its limit."""
    w = await h.wallet(100, expires_ms=h.now + 1_000)
    hold = await h.authorize(w, 80)
    h.advance(1_000)
    balance = await h.backend.balance(w, h.now)
    assert (balance.active, balance.held, balance.available) == (0, 80, -80)
    with pytest.raises(InsufficientFunds) as refused:
        await h.authorize(w, 1)
    with pytest.raises(InsufficientFunds) as refused:
        await h.capture(hold.hold_id, 1)
    assert refused.value.metadata["available"] == "0"
    await h.check(w, allow_deficit=True)
    await h.grant(w, 30)
    assert (await h.capture(hold.hold_id, 30)).balance.available == 0
    await h.check(w)


async def test_a_hold_id_is_never_reused(h: Harness) -> None:
    w = await h.wallet(100)
    first = h.authorize_request(w, 10)
    await h.backend.authorize(first)
    reused = dataclasses.replace(h.authorize_request(w, 20), hold_id=first.hold_id)
    with pytest.raises(ExternalIdTaken):
        await h.backend.authorize(reused)
    assert (await h.backend.balance(w, h.now)).held == 10
    await h.check(w)

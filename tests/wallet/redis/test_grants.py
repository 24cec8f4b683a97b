"""Grants: drawdown order, activation, expiry, overdraft repayment, refunds."""

from __future__ import annotations

import pytest

from obol_core.errors import ValidationFailed
from obol_wallet.errors import (
    ExternalIdTaken,
    GrantNotRefundable,
    InsufficientFunds,
    RefundExceedsRemaining,
    ResourceNotFound,
)
from obol_wallet.model import EntryKind, GrantKind

from .helpers import USD, Harness


async def test_draws_follow_priority_then_expiry_then_age(h: Harness) -> None:
    w = await h.wallet()
    t = h.now
    late_never = await h.grant(w, 10, priority=100)  # never expires: last in its priority
    h.advance(1)
    soon = await h.grant(w, 10, priority=100, expires_ms=t + 50_000)
    h.advance(1)
    sooner = await h.grant(w, 10, priority=100, expires_ms=t + 40_000)
    h.advance(1)
    old_never = late_never
    young_never = await h.grant(w, 10, priority=100)
    urgent = await h.grant(w, 10, priority=5, expires_ms=t + 90_000)
    low = await h.grant(w, 10, priority=500, expires_ms=t + 10_000)

    order = [g.grant_id for g in await h.backend.grants(w, h.now)]
    expected = [urgent, sooner, soon, old_never, young_never, low]
    assert order == [g.grant_id for g in expected]

    drawn = []
    for _ in range(6):
        result = await h.charge(w, 10)
        drawn += [d.grant_id for d in result.draws]
    assert drawn == order
    assert await h.backend.grants(w, h.now) == []
    await h.check(w)


async def test_a_capture_spans_grants_in_order(h: Harness) -> None:
    w = await h.wallet()
    a = await h.grant(w, 30, priority=1)
    b = await h.grant(w, 30, priority=2)
    c = await h.grant(w, 30, priority=3)
    hold = await h.authorize(w, 80)
    result = await h.capture(hold.hold_id, 70)
    assert [(d.grant_id, d.amount) for d in result.draws] == [
        (a.grant_id, 30),
        (b.grant_id, 30),
        (c.grant_id, 10),
    ]
    (remaining,) = await h.backend.grants(w, h.now)
    assert (remaining.grant_id, remaining.remaining) == (c.grant_id, 20)
    await h.check(w)


async def test_expired_grant_is_never_spent_without_the_sweeper(h: Harness) -> None:
    w = await h.wallet()
    expiring = await h.grant(w, 100, expires_ms=h.now + 1_000, kind=GrantKind.PROMOTIONAL)
    await h.grant(w, 5)
    h.advance(999)
    assert await h.available(w) == 105
    h.advance(1)
    with pytest.raises(InsufficientFunds) as refused:
        await h.charge(w, 6)
    assert refused.value.metadata["available"] == "5"
    expiries = [e for m in await h.messages(w) for e in m.entries if e.kind is EntryKind.EXPIRY]
    (expiry,) = expiries
    assert {(line.account, line.amount) for line in expiry.lines} == {
        (f"wallet:{w}:grant:{expiring.grant_id}", -100),
        (f"expired:{USD}", 100),
    }
    rows = [
        r for m in await h.messages(w) for r in m.grants if r.grant.grant_id == expiring.grant_id
    ]
    assert rows[-1].expired and rows[-1].grant.remaining == 0
    await h.check(w)


async def test_expiry_entries_are_committed_even_when_the_call_is_refused(h: Harness) -> None:
    w = await h.wallet(10, expires_ms=h.now + 100)
    h.advance(100)
    refused = h.charge_request(w, 1)
    with pytest.raises(InsufficientFunds):
        await h.backend.charge(refused)
    (message,) = [m for m in await h.messages(w) if m.op.value == "expire"]
    assert message.request is None and message.result == ""
    assert [e.entry_id for e in message.entries] == [f"{refused.entry_id}.2"]  # <entry>.<seq>
    await h.check(w)


async def test_pending_grant_activates_at_its_time(h: Harness) -> None:
    w = await h.wallet(10)
    future = await h.grant(w, 50, effective_ms=h.now + 5_000, expires_ms=h.now + 9_000)
    grants = await h.backend.grants(w, h.now)
    assert [g.grant_id for g in grants][-1] == future.grant_id  # pending ones come last
    assert await h.available(w) == 10
    h.advance(5_000)
    assert await h.available(w) == 60
    h.advance(4_000)
    assert await h.available(w) == 10
    await h.check(w)


async def test_new_grant_repays_overdraft_first(h: Harness) -> None:
    w = await h.wallet(10, overdraft_limit=100)
    await h.charge(w, 50)  # 10 from the grant, 40 of overdraft
    assert (await h.backend.balance(w, h.now)).overdraft_used == -40
    topup = await h.grant(w, 100)
    assert topup.balance.overdraft_used == 0
    assert topup.balance.active == 60
    grant_message = [m for m in await h.messages(w) if m.op.value == "grant"][-1]
    (entry,) = grant_message.entries
    assert entry.kind is EntryKind.TOP_UP
    lines = [(line.account, line.amount) for line in entry.lines]
    assert lines == [
        (f"topup_clearing:{USD}", -100),
        (f"wallet:{w}:grant:{topup.grant_id}", 100),
        (f"wallet:{w}:grant:{topup.grant_id}", -40),
        (f"wallet:{w}:overdraft", 40),
    ]
    await h.check(w)


async def test_grant_smaller_than_the_overdraft_is_used_up_by_it(h: Harness) -> None:
    w = await h.wallet(0, overdraft_limit=100)
    await h.charge(w, 70)
    small = await h.grant(w, 30, kind=GrantKind.INCLUDED)
    assert (small.balance.active, small.balance.overdraft_used) == (0, -40)
    assert await h.backend.grants(w, h.now) == []  # wholly spent on the overdraft
    await h.check(w)


async def test_pending_grant_repays_overdraft_when_it_activates(h: Harness) -> None:
    w = await h.wallet(0, overdraft_limit=100)
    await h.grant(w, 100, effective_ms=h.now + 1_000, kind=GrantKind.PROMOTIONAL)
    await h.charge(w, 60)
    h.advance(1_000)
    balance = await h.backend.balance(w, h.now)
    assert (balance.active, balance.overdraft_used, balance.available) == (40, 0, 140)
    repayments = [
        e
        for m in await h.messages(w)
        for e in m.entries
        if e.memo.get("reason") == "overdraft_repayment"
    ]
    assert len(repayments) == 1 and repayments[0].kind is EntryKind.ADJUSTMENT
    await h.check(w)


async def test_grant_sources_per_kind(h: Harness) -> None:
    w = await h.wallet()
    sources = {
        GrantKind.PURCHASED: "topup_clearing",
        GrantKind.INCLUDED: "included",
        GrantKind.PROMOTIONAL: "promotions",
        GrantKind.ROLLOVER: "included",
        GrantKind.ADJUSTMENT: "adjustments",
    }
    for kind in sources:
        await h.grant(w, 1, kind=kind)
    entries = [e for m in await h.messages(w) if m.op.value == "grant" for e in m.entries]
    assert [e.lines[0].account for e in entries] == [f"{s}:{USD}" for s in sources.values()]
    assert [e.kind for e in entries] == [EntryKind.TOP_UP] + [EntryKind.GRANT] * 4
    await h.check(w)


async def test_refund_rules(h: Harness) -> None:
    w = await h.wallet()
    bought = await h.grant(w, 100)
    promo = await h.grant(w, 50, kind=GrantKind.PROMOTIONAL)
    with pytest.raises(GrantNotRefundable):
        await h.refund(w, promo.grant_id, 1)
    with pytest.raises(RefundExceedsRemaining) as refused:
        await h.refund(w, bought.grant_id, 101)
    assert refused.value.metadata["remaining"] == "100"
    hold = await h.authorize(w, 120)  # 30 left free
    with pytest.raises(InsufficientFunds):  # reserved funds are not refunded
        await h.refund(w, bought.grant_id, 31)
    await h.void(hold.hold_id)
    result = await h.refund(w, bought.grant_id, 60)
    assert result.balance.active == 90
    refund = next(m for m in await h.messages(w) if m.op.value == "refund")
    assert [(line.account, line.amount) for line in refund.entries[0].lines] == [
        (f"wallet:{w}:grant:{bought.grant_id}", -60),
        (f"topup_clearing:{USD}", 60),
    ]
    assert refund.grants[0].grant.refunded == 60
    await h.refund(w, bought.grant_id, 40)
    with pytest.raises(ResourceNotFound):  # exhausted grants leave the hot state
        await h.refund(w, bought.grant_id, 1)
    await h.check(w)


async def test_refund_of_a_pending_grant(h: Harness) -> None:
    w = await h.wallet()
    later = await h.grant(w, 100, effective_ms=h.now + 10_000)
    await h.refund(w, later.grant_id, 100)
    assert await h.backend.grants(w, h.now) == []
    h.advance(10_000)
    assert await h.available(w) == 0
    await h.check(w)


async def test_grant_checks(h: Harness) -> None:
    w = await h.wallet()
    with pytest.raises(ValidationFailed):
        await h.grant(w, 10, expires_ms=h.now)  # already expired
    request = h.grant_request(w, 10)
    await h.backend.grant(request)
    again = h.grant_request(w, 10)
    with pytest.raises(ExternalIdTaken):
        await h.backend.grant(again.__class__(**{**again.__dict__, "grant_id": request.grant_id}))
    with pytest.raises(ValidationFailed):
        await h.grant(w, 0)
    with pytest.raises(ValidationFailed):
        await h.grant(w, 1, priority=100_000)
    await h.check(w)

"""Numbers at the edge of 2^53, input checks, settings, and backpressure."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from obol_core.errors import AmountOutOfRange, ValidationFailed
from obol_core.money import LUA_EXACT_MAX
from obol_wallet.errors import Backpressure, BalanceOutOfRange, InsufficientFunds

from .helpers import Harness

MAX = LUA_EXACT_MAX  # 2^53 - 1


async def test_amounts_up_to_2_53_minus_1_are_exact(h: Harness) -> None:
    w = await h.wallet(MAX - 1)
    await h.grant(w, 1)
    assert await h.available(w) == MAX
    with pytest.raises(BalanceOutOfRange) as refused:
        await h.grant(w, 1)
    assert refused.value.metadata["total"] == str(MAX)
    hold = await h.authorize(w, MAX)
    assert hold.held == MAX and hold.balance.available == 0
    captured = await h.capture(hold.hold_id, MAX - 2)
    assert captured.released == 2
    assert sum(d.amount for d in captured.draws) == MAX - 2
    assert captured.balance.active == 2
    for message in await h.messages(w):
        for entry in message.entries:
            assert all(abs(line.amount) <= MAX for line in entry.lines)
    capture = next(m for m in await h.messages(w) if m.op.value == "capture")
    revenue = [
        line.amount for line in capture.entries[0].lines if line.account.startswith("revenue")
    ]
    assert revenue == [MAX - 2]
    await h.check(w)


async def test_pending_grants_and_the_overdraft_limit_count_in_the_total(h: Harness) -> None:
    w = await h.wallet(overdraft_limit=10)
    await h.grant(w, MAX - 20, effective_ms=h.now + 1_000)
    with pytest.raises(BalanceOutOfRange):
        await h.grant(w, 11)
    await h.grant(w, 10)
    with pytest.raises(BalanceOutOfRange):
        await h.settings(w, overdraft_limit=11)
    h.advance(1_000)
    assert await h.available(w) == MAX
    await h.check(w)


async def test_out_of_range_input_is_refused_before_any_script(h: Harness) -> None:
    w = await h.wallet(10)
    for amount in (MAX + 1, -1):
        with pytest.raises(AmountOutOfRange):
            await h.authorize(w, amount)
        with pytest.raises(AmountOutOfRange):
            await h.charge(w, amount)
    with pytest.raises(AmountOutOfRange):
        await h.backend.authorize(dataclasses.replace(h.authorize_request(w, 1), amount=True))  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        await h.authorize(w, 1, ttl_ms=0)
    with pytest.raises(ValidationFailed):
        await h.backend.balance(w, 10**14)
    with pytest.raises(ValidationFailed):
        await h.backend.charge(
            dataclasses.replace(
                h.charge_request(w, 1),
                idem=dataclasses.replace(h.charge_request(w, 1).idem, request_hash="a|b"),
            )
        )
    assert len(await h.messages(w)) == 1  # only the grant


async def test_lowering_the_overdraft_limit_must_leave_available_non_negative(h: Harness) -> None:
    w = await h.wallet(0, overdraft_limit=100)
    await h.charge(w, 30)
    await h.authorize(w, 50)
    with pytest.raises(InsufficientFunds) as refused:
        await h.settings(w, overdraft_limit=79)
    assert refused.value.metadata["available"] == "20"
    result = await h.settings(w, overdraft_limit=80)
    assert result.balance.available == 0
    settings = next(m for m in await h.messages(w) if m.op.value == "settings")
    assert settings.entries[0].memo == {"overdraft_limit": "80"}
    assert settings.entries[0].lines == []
    await h.check(w)


async def test_backpressure_refuses_new_spends_and_grants_only(h: Harness) -> None:
    w = await h.wallet(100)
    hold = await h.authorize(w, 10)
    replayable = h.charge_request(w, 5)
    await h.backend.charge(replayable)
    backlog = await h.client.xlen(h.keys(w).ledger)
    h.backend = h.make_backend(backlog_limit=backlog - 1)
    for refused_call in (h.authorize(w, 1), h.charge(w, 1), h.grant(w, 1)):
        with pytest.raises(Backpressure) as refused:
            await refused_call
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.retry_delay_seconds is not None
        assert refused.value.metadata["backlog"] == str(backlog)
    assert (await h.backend.charge(replayable)).replayed  # replays change nothing
    await h.capture(hold.hold_id, 10)  # resolving a hold is allowed
    assert await h.available(w) == 85
    await h.check(w)

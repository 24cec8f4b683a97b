"""Fail closed without hot state; hydrate from a snapshot restores it exactly."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import grpc
import pytest

from obol_core.ids import new_ulid
from obol_wallet.errors import AssetMismatch, HoldExpired, WalletNotHydrated
from obol_wallet.model import GrantKind, HoldState
from obol_wallet.partitions import hold_id_for
from obol_wallet.redis_backend.scripts import Scripts

from .helpers import START_MS, USD, Harness, idem, new_wallet_id, snapshot_from
from .test_top_up import RULE


async def _every_operation_refused(h: Harness, w: str, hold_id: str) -> None:
    calls = [
        h.backend.balance(w, h.now),
        h.backend.grants(w, h.now),
        h.backend.hold(w, hold_id, h.now),
        h.grant(w, 10),
        h.authorize(w, 1),
        h.capture(hold_id, 1),
        h.void(hold_id),
        h.charge(w, 1),
        h.refund(w, "grt_x", 1),
        h.settings(w, frozen=True),
    ]
    for call in calls:
        with pytest.raises(WalletNotHydrated) as refused:
            await call
        assert refused.value.code is grpc.StatusCode.UNAVAILABLE
        assert refused.value.metadata == {"wallet_id": w}


async def test_a_wallet_without_hot_state_is_refused_never_served_as_zero(h: Harness) -> None:
    w = new_wallet_id()
    await _every_operation_refused(h, w, hold_id_for(w, new_ulid()))
    assert not await h.backend.is_hydrated(w)


async def test_open_wallet_is_idempotent(h: Harness) -> None:
    w = new_wallet_id()
    await h.backend.open_wallet(w, USD, 50, h.now)
    await h.grant(w, 10)
    await h.backend.open_wallet(w, USD, 0, h.now)  # already there: nothing changes
    balance = await h.backend.balance(w, h.now)
    assert (balance.active, balance.overdraft_limit, balance.available) == (10, 50, 60)
    with pytest.raises(AssetMismatch):
        await h.backend.open_wallet(w, "EUR", 0, h.now)
    assert await h.backend.is_hydrated(w)


async def test_drop_then_hydrate_restores_exactly(h: Harness) -> None:
    w = await h.wallet(1_000, overdraft_limit=100)
    await h.grant(w, 300, kind=GrantKind.PROMOTIONAL, priority=10, expires_ms=h.now + 50_000)
    await h.grant(w, 200, effective_ms=h.now + 20_000)
    open_hold = await h.authorize(w, 150, ttl_ms=30_000)
    expiring_hold = await h.authorize(w, 70, ttl_ms=10_000)
    closed = await h.authorize(w, 100)
    charge_request = h.charge_request(w, 80)
    charged = await h.backend.charge(charge_request)
    await h.capture(closed.hold_id, 90)
    await h.settings(w, frozen=False, overdraft_limit=120)

    before_balance = await h.backend.balance(w, h.now)
    before_grants = await h.backend.grants(w, h.now)
    before_hold = await h.backend.hold(w, open_hold.hold_id, h.now)
    messages = await h.messages(w)

    await h.backend.drop_hot_state(w)
    assert not await h.backend.is_hydrated(w)
    await _every_operation_refused(h, w, open_hold.hold_id)

    assert await h.backend.hydrate(snapshot_from(messages), now_ms=h.now)
    assert not await h.backend.hydrate(snapshot_from(messages), now_ms=h.now)  # only once
    assert await h.backend.balance(w, h.now) == before_balance
    assert await h.backend.grants(w, h.now) == before_grants
    assert await h.backend.hold(w, open_hold.hold_id, h.now) == before_hold
    replay = await h.backend.charge(charge_request)  # idempotency survives the rebuild
    assert replay.replayed and dataclasses.replace(replay, replayed=False) == charged
    await h.check(w)

    # Time goes on as if nothing happened: the pending grant activates, holds expire.
    h.advance(20_000)
    with pytest.raises(HoldExpired):
        await h.capture(expiring_hold.hold_id, 1)
    captured = await h.capture(open_hold.hold_id, 150)
    assert captured.released == 0
    balance = await h.backend.balance(w, h.now)
    assert balance.held == 0
    assert balance.active == 1_000 + 300 + 200 - 80 - 90 - 150
    assert (await h.backend.hold(w, open_hold.hold_id, h.now)).state is HoldState.CAPTURED
    await h.check(w)


async def test_a_partial_hot_state_is_never_replaced_by_an_empty_one(h: Harness) -> None:
    w = await h.wallet(100)
    await h.client.hdel(h.keys(w).wallet, "hydrated")
    with pytest.raises(WalletNotHydrated):
        await h.backend.open_wallet(w, USD, 0, h.now)
    with pytest.raises(WalletNotHydrated):
        await h.backend.balance(w, h.now)
    messages = await h.messages(w)
    assert await h.backend.hydrate(snapshot_from(messages), now_ms=h.now)
    assert await h.available(w) == 100
    await h.check(w)


# ---- the auto top-up attempt in flight (docs/decisions.md D13) ----


async def _top_up_fields(h: Harness, w: str) -> dict[str, str]:
    raw = await h.client.hgetall(h.keys(w).wallet)
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"tu_")}


async def _queued_attempts(h: Harness, w: str) -> list[dict[str, str]]:
    messages = await h.client.xrange(h.keys(w).topups, "-", "+")
    decoded = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in messages]
    return [m for m in decoded if m["w"] == w and m["type"] == "attempt"]


def _stage_record(w: str, attempt_id: str, amount: int = 20) -> list[str | int]:
    return ["t", attempt_id, w, USD, amount, "pm_ok_card", START_MS]


async def test_a_staged_attempt_is_pending_from_the_call_that_hydrates(h: Harness) -> None:
    w = await h.wallet(100)
    messages = await h.messages(w)
    await h.backend.drop_hot_state(w)
    stage = Scripts(h.client).hydrate_records
    keys = h.keys(w)
    attempt_id = f"{w}:7"

    assert await stage([keys.wallet, keys.topups], _stage_record(w, attempt_id)) == 1
    assert not await h.backend.is_hydrated(w)  # staged, not served
    assert await _queued_attempts(h, w) == [
        {
            "type": "attempt",
            "w": w,
            "id": attempt_id,
            "asset": USD,
            "amount": "20",
            "pm": "pm_ok_card",
            "at": str(START_MS),
        }
    ]
    assert await h.backend.hydrate(snapshot_from(messages), now_ms=h.now)
    assert await _top_up_fields(h, w) == {"tu_pend": attempt_id}
    assert b"tu_stage" not in await h.client.hkeys(keys.wallet)

    # Once hydrated, staging writes nothing (and queues nothing).
    assert await stage([keys.wallet, keys.topups], _stage_record(w, f"{w}:8")) == 0
    assert await _top_up_fields(h, w) == {"tu_pend": attempt_id}
    assert len(await _queued_attempts(h, w)) == 1

    # With the rule mirrored back, a spend below the threshold starts no second attempt;
    # the grant that pays the restored attempt clears it.
    await h.backend.mirror_top_up_rule(replace(RULE, wallet_id=w))
    assert not (await h.charge(w, 80)).auto_top_up_triggered  # 20 left, threshold 50
    assert len(await _queued_attempts(h, w)) == 1
    paid = h.grant_request(w, 20, request=idem(attempt_id))
    await h.backend.grant(replace(paid, top_up_attempt=attempt_id))
    assert (await _top_up_fields(h, w))["tu_pend"] == ""
    assert (await h.charge(w, 1)).auto_top_up_triggered  # 39 left: the next one starts
    await h.check(w)


async def test_hydrate_keeps_no_attempt_but_a_staged_one(h: Harness) -> None:
    w = await h.wallet(100)
    await h.backend.mirror_top_up_rule(replace(RULE, wallet_id=w))
    assert (await h.charge(w, 60)).auto_top_up_triggered
    stale = (await _top_up_fields(h, w))["tu_pend"]
    messages = await h.messages(w)
    keys = h.keys(w)
    stage = Scripts(h.client).hydrate_records

    # A partial hot state's own tu_pend is not trusted: only what rebuild staged counts.
    await h.client.hdel(keys.wallet, "hydrated")
    assert await h.backend.hydrate(snapshot_from(messages), now_ms=h.now)
    assert "tu_pend" not in await _top_up_fields(h, w)

    # An empty record clears the stage of an interrupted rebuild, and queues nothing.
    await h.client.hdel(keys.wallet, "hydrated")
    assert await stage([keys.wallet, keys.topups], _stage_record(w, stale)) == 1
    queued = len(await _queued_attempts(h, w))
    assert await stage([keys.wallet, keys.topups], ["t", "", "", "", 0, "", 0]) == 1
    assert len(await _queued_attempts(h, w)) == queued
    assert await h.backend.hydrate(snapshot_from(messages), now_ms=h.now)
    assert "tu_pend" not in await _top_up_fields(h, w)
    await h.check(w)

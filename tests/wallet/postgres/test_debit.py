"""Streaming debit and hold extension on the Postgres baseline: the same rules as the Redis
backend (tests/wallet/redis/test_debit.py), each one transaction, with a ledger that stays
balanced, hash-chained and equal to the counters."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from obol_core.idempotency import IdempotencyKeyReused
from obol_core.ids import new_id
from obol_wallet.errors import HoldAlreadyCaptured, HoldExpired, InsufficientFunds, WalletFrozen
from obol_wallet.model import (
    CostRecord,
    DebitRequest,
    DebitResult,
    EntryKind,
    ExtendHoldRequest,
    ExtendHoldResult,
    GrantKind,
    HoldState,
    StopReason,
)
from obol_wallet.partitions import reversal_grant_id
from obol_wallet.pg_backend import PostgresBackend

from . import ops
from .support import START_MS, USD
from .test_pg_backend import assert_ledger_consistent, funded


def debit_request(
    wallet_id: str,
    hold_id: str,
    amount: int,
    *,
    now_ms: int = START_MS,
    cost: CostRecord | None = None,
    request_id: str | None = None,
    content: str | None = None,
) -> DebitRequest:
    return DebitRequest(
        idem=ops.idem(request_id, content if content is not None else f"debit{amount}"),
        wallet_id=wallet_id,
        hold_id=hold_id,
        entry_id=new_id("txn"),
        amount=amount,
        now_ms=now_ms,
        cost=cost,
    )


def extend_request(
    wallet_id: str, hold_id: str, ttl_ms: int, increase_by: int = 0, *, now_ms: int = START_MS
) -> ExtendHoldRequest:
    return ExtendHoldRequest(
        idem=ops.idem(None, f"extend{ttl_ms}/{increase_by}"),
        wallet_id=wallet_id,
        hold_id=hold_id,
        entry_id=new_id("txn"),
        ttl_ms=ttl_ms,
        increase_by=increase_by,
        now_ms=now_ms,
    )


async def _entries(pool: asyncpg.Pool, wallet_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT entry_id, kind, memo FROM ledger_entries WHERE wallet_id = $1 ORDER BY seq",
        wallet_id,
    )


async def _lines(pool: asyncpg.Pool, entry_id: str) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT account, amount FROM ledger_lines WHERE entry_id = $1", entry_id
    )
    return {row["account"]: row["amount"] for row in rows}


async def test_debits_draw_at_once_and_stop_when_the_hold_is_used_up(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 1_000)
    hold = await backend.authorize(ops.authorize(w, 300))
    first = await backend.debit(debit_request(w, hold.hold_id, 200, cost=CostRecord("EUR", 9)))
    assert (first.charged, first.shortfall, first.hold_remaining) == (200, 0, 100)
    assert first.stop_reason is None
    assert (first.balance.active, first.balance.held, first.balance.available) == (800, 100, 700)
    lines = await _lines(pool, first.entry_ids[-1])
    (draw,) = first.draws
    assert lines == {
        f"wallet:{w}:grant:{draw.grant_id}": -200,
        f"revenue:{USD}": 200,
        "cost:EUR": 9,
        "provider_payable:EUR": -9,
    }
    last = await backend.debit(debit_request(w, hold.hold_id, 100))
    assert (last.hold_remaining, last.hold_debited) == (0, 300)
    assert last.stop_reason is StopReason.HOLD_EXHAUSTED
    stored = await backend.hold(w, hold.hold_id, START_MS)
    assert (stored.state, stored.debited, stored.ttl_ms) == (HoldState.OPEN, 300, 60_000)
    assert [row["kind"] for row in await _entries(pool, w)][-2:] == ["debit", "debit"]
    await assert_ledger_consistent(pool, w)


async def test_an_overrun_draws_only_on_the_free_balance(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 1_000)
    streaming = await backend.authorize(ops.authorize(w, 300))
    other = await backend.authorize(ops.authorize(w, 500))
    result = await backend.debit(debit_request(w, streaming.hold_id, 600))
    assert (result.charged, result.shortfall, result.hold_remaining) == (500, 100, 0)
    assert result.stop_reason is StopReason.WALLET_EXHAUSTED
    assert (result.balance.active, result.balance.held, result.balance.available) == (500, 500, 0)
    assert (await backend.capture(ops.capture(w, other.hold_id, 500))).charged == 500
    await assert_ledger_consistent(pool, w)


async def test_an_overrun_may_use_the_overdraft_never_past_its_limit(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 100, overdraft=50)
    hold = await backend.authorize(ops.authorize(w, 100))
    result = await backend.debit(debit_request(w, hold.hold_id, 200))
    assert (result.charged, result.shortfall, result.overdraft_drawn) == (150, 50, 50)
    assert (result.balance.overdraft_used, result.balance.available) == (-50, 0)
    await assert_ledger_consistent(pool, w)


async def test_a_frozen_wallet_debits_within_the_hold_and_says_stop(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 1_000)
    hold = await backend.authorize(ops.authorize(w, 300))
    await backend.update_settings(ops.settings(w, frozen=True))
    within = await backend.debit(debit_request(w, hold.hold_id, 100))
    assert (within.charged, within.stop_reason) == (100, StopReason.WALLET_FROZEN)
    beyond = await backend.debit(debit_request(w, hold.hold_id, 500))
    assert (beyond.charged, beyond.shortfall, beyond.hold_remaining) == (200, 300, 0)
    assert beyond.stop_reason is StopReason.WALLET_FROZEN
    await assert_ledger_consistent(pool, w)


async def test_debits_keep_a_hold_alive_past_its_ttl(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 1_000)
    streaming = await backend.authorize(ops.authorize(w, 500, ttl_ms=10_000))
    idle = await backend.authorize(ops.authorize(w, 100, ttl_ms=10_000))
    now = START_MS
    for _ in range(5):
        now += 8_000
        result = await backend.debit(debit_request(w, streaming.hold_id, 50, now_ms=now))
        assert result.expires_ms == now + 10_000
    with pytest.raises(HoldExpired):
        await backend.debit(debit_request(w, idle.hold_id, 10, now_ms=now))
    assert (await backend.hold(w, streaming.hold_id, now)).state is HoldState.OPEN
    now += 10_000
    hold = await backend.hold(w, streaming.hold_id, now)
    assert (hold.state, hold.debited) == (HoldState.EXPIRED, 250)
    balance = await backend.balance(w, now)
    assert (balance.active, balance.held, balance.available) == (750, 0, 750)
    await assert_ledger_consistent(pool, w)


async def test_capture_after_debits_charges_only_the_rest(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 1_000)
    hold = await backend.authorize(ops.authorize(w, 600))
    await backend.debit(debit_request(w, hold.hold_id, 250))
    result = await backend.capture(ops.capture(w, hold.hold_id, 400))
    assert (result.charged, result.released, result.reversed) == (400, 200, 0)
    assert sum(d.amount for d in result.draws) == 150
    assert result.balance.available == 600
    assert (await _lines(pool, result.entry_ids[-1]))[f"revenue:{USD}"] == 150
    captured = await backend.hold(w, hold.hold_id, START_MS)
    assert (captured.state, captured.captured, captured.debited) == (HoldState.CAPTURED, 400, 250)
    await assert_ledger_consistent(pool, w)


async def test_a_capture_below_the_debits_reverses_the_difference(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 1_000)
    hold = await backend.authorize(ops.authorize(w, 600))
    await backend.debit(debit_request(w, hold.hold_id, 500))
    request = ops.capture(w, hold.hold_id, 350)
    result = await backend.capture(request)
    assert (result.charged, result.released, result.reversed, result.draws) == (350, 100, 150, ())
    assert result.balance.available == 650
    *_, reversal, capture = await _entries(pool, w)
    assert (reversal["kind"], capture["kind"]) == ("reversal", "capture")
    assert result.entry_ids == (reversal["entry_id"], request.entry_id)
    grant_id = reversal_grant_id(w, request.entry_id)
    assert await _lines(pool, reversal["entry_id"]) == {
        f"revenue:{USD}": -150,
        f"wallet:{w}:grant:{grant_id}": 150,
    }
    grants = {g.grant_id: g for g in await backend.grants(w, START_MS)}
    assert (grants[grant_id].kind, grants[grant_id].remaining) == (GrantKind.ADJUSTMENT, 150)
    await assert_ledger_consistent(pool, w)


async def test_a_reversal_repays_the_overdraft_first(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 0, overdraft=500)
    hold = await backend.authorize(ops.authorize(w, 300))
    assert (await backend.debit(debit_request(w, hold.hold_id, 300))).overdraft_drawn == 300
    result = await backend.capture(ops.capture(w, hold.hold_id, 100))
    assert result.reversed == 200
    assert (result.balance.overdraft_used, result.balance.active) == (-100, 0)
    await assert_ledger_consistent(pool, w)


async def test_a_debit_replays_and_a_reused_request_id_is_refused(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 1_000)
    hold = await backend.authorize(ops.authorize(w, 300))
    request = debit_request(w, hold.hold_id, 120, request_id="chunk-1")
    first = await backend.debit(request)
    again = await backend.debit(dataclasses.replace(request, now_ms=START_MS + 1_000))
    assert again.replayed
    assert dataclasses.replace(again, replayed=False) == first
    with pytest.raises(IdempotencyKeyReused):
        await backend.debit(debit_request(w, hold.hold_id, 7, request_id="chunk-1"))
    duplicates = await asyncio.gather(
        *(backend.debit(debit_request(w, hold.hold_id, 5, request_id="chunk-2")) for _ in range(20))
    )
    assert sum(not d.replayed for d in duplicates) == 1
    assert (await backend.hold(w, hold.hold_id, START_MS)).debited == 125
    await assert_ledger_consistent(pool, w)


async def test_extend_hold(pool: asyncpg.Pool, backend: PostgresBackend) -> None:
    w = await funded(pool, backend, 1_000)
    hold = await backend.authorize(ops.authorize(w, 300, ttl_ms=10_000))
    await backend.debit(debit_request(w, hold.hold_id, 300))
    now = START_MS + 8_000
    extended: ExtendHoldResult = await backend.extend_hold(
        extend_request(w, hold.hold_id, 60_000, 400, now_ms=now)
    )
    assert (extended.authorized, extended.debited, extended.ttl_ms) == (700, 300, 60_000)
    assert (extended.expires_ms, extended.balance.available) == (now + 60_000, 300)
    (entry,) = [r for r in await _entries(pool, w) if r["entry_id"] == extended.entry_ids[0]]
    assert entry["kind"] == EntryKind.HOLD.value
    shorter = await backend.extend_hold(extend_request(w, hold.hold_id, 1_000, now_ms=now))
    assert (shorter.entry_ids, shorter.expires_ms) == ((), now + 60_000)
    with pytest.raises(InsufficientFunds):
        await backend.extend_hold(extend_request(w, hold.hold_id, 60_000, 301, now_ms=now))
    await backend.update_settings(ops.settings(w, frozen=True, now_ms=now))
    with pytest.raises(WalletFrozen):
        await backend.extend_hold(extend_request(w, hold.hold_id, 60_000, 1, now_ms=now))
    await backend.capture(ops.capture(w, hold.hold_id, 300, now_ms=now))
    with pytest.raises(HoldAlreadyCaptured):
        await backend.extend_hold(extend_request(w, hold.hold_id, 60_000, now_ms=now))
    await assert_ledger_consistent(pool, w)


async def test_concurrent_debits_on_one_hold_never_overdraw(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    w = await funded(pool, backend, 1_000)
    hold = await backend.authorize(ops.authorize(w, 400))
    other = await backend.authorize(ops.authorize(w, 300))
    results: list[DebitResult] = await asyncio.gather(
        *(backend.debit(debit_request(w, hold.hold_id, 7)) for _ in range(100))
    )
    assert sum(r.charged for r in results) == 700
    assert sum(r.shortfall for r in results) == 100 * 7 - 700
    assert sum(r.stop_reason is None for r in results) == 400 // 7
    balance = await backend.balance(w, START_MS)
    assert (balance.active, balance.held, balance.available) == (300, 300, 0)
    assert (await backend.hold(w, other.hold_id, START_MS)).authorized == 300
    await assert_ledger_consistent(pool, w)

"""PostgresBackend: the hot-path semantics, held to the same rules as the Redis backend, and
its ledger (complete without any worker) agreeing with its counters."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter

import asyncpg
import pytest

from obol_core.errors import AmountOutOfRange, ValidationFailed
from obol_core.idempotency import IdempotencyKeyReused
from obol_core.money import LUA_EXACT_MAX
from obol_wallet import ledger_queries
from obol_wallet.errors import (
    BalanceOutOfRange,
    CaptureExceedsHold,
    GrantNotRefundable,
    HoldAlreadyCaptured,
    HoldExpired,
    HoldVoided,
    InsufficientFunds,
    RefundExceedsRemaining,
    ResourceNotFound,
    UnknownHold,
    UnknownWallet,
    WalletFrozen,
)
from obol_wallet.model import CostRecord, EntryKind, GrantKind, GrantState, HoldState
from obol_wallet.pg_backend import PostgresBackend
from obol_wallet.reconcile import ledger_drift

from . import ops
from .support import DOLLAR, START_MS, USD, new_wallet

HOUR = 3_600_000


async def funded(pool: asyncpg.Pool, backend: PostgresBackend, amount: int, **kw: int) -> str:
    wallet_id = await new_wallet(pool, **kw)
    if amount:
        await backend.grant(ops.grant(wallet_id, amount))
    return wallet_id


async def assert_ledger_consistent(pool: asyncpg.Pool, wallet_id: str) -> None:
    assert await ledger_drift(pool, wallet_id) == []
    verification = await ledger_queries.verify_chain(pool, wallet_id)
    assert verification.valid, verification.problem
    assert await ledger_queries.unbalanced_assets(pool) == {}


async def test_grant_then_authorize_capture_releases_the_rest(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    held = await backend.authorize(ops.authorize(wallet_id, 3 * DOLLAR))
    assert (held.held, held.balance.available) == (3 * DOLLAR, 2 * DOLLAR)
    cost = CostRecord(USD, DOLLAR // 4)
    captured = await backend.capture(ops.capture(wallet_id, held.hold_id, DOLLAR, cost=cost))
    assert (captured.charged, captured.released) == (DOLLAR, 2 * DOLLAR)
    assert captured.balance.available == 4 * DOLLAR
    assert captured.balance.held == 0
    hold = await backend.hold(wallet_id, held.hold_id, START_MS)
    assert (hold.state, hold.captured) == (HoldState.CAPTURED, DOLLAR)
    entry = await ledger_queries.get_transaction(pool, captured.entry_ids[0])
    accounts = {line.account: line.amount for line in entry.entry.lines}
    assert accounts[f"revenue:{USD}"] == DOLLAR
    assert accounts[f"cost:{USD}"] == DOLLAR // 4
    await assert_ledger_consistent(pool, wallet_id)


async def test_each_hold_resolves_once(pool: asyncpg.Pool, backend: PostgresBackend) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    captured = await backend.authorize(ops.authorize(wallet_id, DOLLAR))
    await backend.capture(ops.capture(wallet_id, captured.hold_id, DOLLAR))
    with pytest.raises(HoldAlreadyCaptured):
        await backend.capture(ops.capture(wallet_id, captured.hold_id, 1))
    with pytest.raises(HoldAlreadyCaptured):
        await backend.void(ops.void(wallet_id, captured.hold_id))
    voided = await backend.authorize(ops.authorize(wallet_id, DOLLAR))
    assert (await backend.void(ops.void(wallet_id, voided.hold_id))).balance.available == 4 * DOLLAR
    with pytest.raises(HoldVoided):
        await backend.capture(ops.capture(wallet_id, voided.hold_id, 1))
    with pytest.raises(HoldVoided):
        await backend.void(ops.void(wallet_id, voided.hold_id))
    with pytest.raises(UnknownHold):
        await backend.void(ops.void(wallet_id, "hld_nope"))
    await assert_ledger_consistent(pool, wallet_id)


async def test_holds_count_against_the_balance(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    for _ in range(5):
        await backend.authorize(ops.authorize(wallet_id, DOLLAR))
    with pytest.raises(InsufficientFunds) as caught:
        await backend.authorize(ops.authorize(wallet_id, DOLLAR))
    assert caught.value.metadata["available"] == "0"
    assert caught.value.metadata["required"] == str(DOLLAR)


async def test_an_expired_hold_releases_itself_and_cannot_be_captured(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    held = await backend.authorize(ops.authorize(wallet_id, 3 * DOLLAR, ttl_ms=10_000))
    assert (await backend.balance(wallet_id, START_MS + 9_999)).available == 2 * DOLLAR
    later = START_MS + 10_000
    assert (await backend.balance(wallet_id, later)).available == 5 * DOLLAR
    with pytest.raises(HoldExpired):
        await backend.capture(ops.capture(wallet_id, held.hold_id, 1, now_ms=later))
    assert (await backend.hold(wallet_id, held.hold_id, later)).state is HoldState.EXPIRED
    await assert_ledger_consistent(pool, wallet_id)


async def test_overcapture_only_when_allowed_and_only_from_the_free_balance(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    hold = await backend.authorize(ops.authorize(wallet_id, 2 * DOLLAR))
    await backend.authorize(ops.authorize(wallet_id, 2 * DOLLAR))  # another reservation
    with pytest.raises(CaptureExceedsHold):
        await backend.capture(ops.capture(wallet_id, hold.hold_id, 3 * DOLLAR))
    with pytest.raises(InsufficientFunds):  # free balance is 1: 4 would eat the other hold
        await backend.capture(ops.capture(wallet_id, hold.hold_id, 4 * DOLLAR, overcapture=True))
    done = await backend.capture(ops.capture(wallet_id, hold.hold_id, 3 * DOLLAR, overcapture=True))
    assert (done.charged, done.released, done.balance.available) == (3 * DOLLAR, 0, 0)
    await assert_ledger_consistent(pool, wallet_id)


async def test_drawdown_order_priority_then_earliest_expiry_then_oldest(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await new_wallet(pool)
    promo = GrantKind.PROMOTIONAL
    late = await backend.grant(ops.grant(wallet_id, DOLLAR, kind=promo))
    older = await backend.grant(ops.grant(wallet_id, DOLLAR, kind=promo, now_ms=START_MS - 1))
    soon = await backend.grant(ops.grant(wallet_id, DOLLAR, kind=promo, expires_ms=START_MS + HOUR))
    first = await backend.grant(ops.grant(wallet_id, DOLLAR, kind=promo, priority=10))
    result = await backend.charge(ops.charge(wallet_id, 3 * DOLLAR + DOLLAR // 2))
    assert [(d.grant_id, d.amount) for d in result.draws] == [
        (first.grant_id, DOLLAR),
        (soon.grant_id, DOLLAR),
        (older.grant_id, DOLLAR),
        (late.grant_id, DOLLAR // 2),
    ]
    grants = await backend.grants(wallet_id, START_MS)
    assert grants[0].grant_id == late.grant_id  # the only one left with funds comes first
    assert {g.grant_id: g.remaining for g in grants}[late.grant_id] == DOLLAR // 2
    await assert_ledger_consistent(pool, wallet_id)


async def test_grants_become_active_when_effective_and_leave_when_expired(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await new_wallet(pool)
    await backend.grant(
        ops.grant(
            wallet_id,
            5 * DOLLAR,
            kind=GrantKind.INCLUDED,
            effective_ms=START_MS + HOUR,
            expires_ms=START_MS + 2 * HOUR,
        )
    )
    assert (await backend.balance(wallet_id, START_MS)).available == 0
    with pytest.raises(InsufficientFunds):
        await backend.charge(ops.charge(wallet_id, 1))
    assert (await backend.balance(wallet_id, START_MS + HOUR)).available == 5 * DOLLAR
    await backend.charge(ops.charge(wallet_id, 2 * DOLLAR, now_ms=START_MS + HOUR))
    expired_at = START_MS + 2 * HOUR
    with pytest.raises(InsufficientFunds):
        await backend.charge(ops.charge(wallet_id, 1, now_ms=expired_at))
    assert (await backend.balance(wallet_id, expired_at)).available == 0
    (grant,) = await backend.grants(wallet_id, expired_at)
    assert (grant.remaining, grant.state(expired_at)) == (0, GrantState.EXPIRED)
    expiries = await ledger_queries.list_transactions(
        pool,
        ledger_queries.TransactionFilter(wallet_id=wallet_id, kinds=[EntryKind.EXPIRY]),
        limit=10,
        with_lines=True,
    )
    assert [line.amount for line in expiries[0].entry.lines] == [-3 * DOLLAR, 3 * DOLLAR]
    await assert_ledger_consistent(pool, wallet_id)


async def test_sweep_settles_wallets_nobody_touches(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    await backend.authorize(ops.authorize(wallet_id, DOLLAR, ttl_ms=1000))
    await backend.grant(ops.grant(wallet_id, DOLLAR, expires_ms=START_MS + 1000))
    assert await backend.sweep(START_MS + 1000, 100) == 1
    assert await backend.sweep(START_MS + 1000, 100) == 0
    row = await pool.fetchrow("SELECT active, held FROM wallets WHERE wallet_id = $1", wallet_id)
    assert (row["active"], row["held"]) == (5 * DOLLAR, 0)
    await assert_ledger_consistent(pool, wallet_id)


async def test_overdraft_goes_to_minus_the_limit_and_no_further(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, DOLLAR, overdraft=2 * DOLLAR)
    result = await backend.charge(ops.charge(wallet_id, 3 * DOLLAR))
    assert result.overdraft_drawn == 2 * DOLLAR
    assert (result.balance.active + result.balance.overdraft_used, result.balance.available) == (
        -2 * DOLLAR,
        0,
    )
    with pytest.raises(InsufficientFunds):
        await backend.charge(ops.charge(wallet_id, 1))
    with pytest.raises(InsufficientFunds):  # lowering the limit would break the invariant
        await backend.update_settings(ops.settings(wallet_id, overdraft_limit=DOLLAR))
    await assert_ledger_consistent(pool, wallet_id)


async def test_refunds_only_of_purchased_grants_within_their_remaining(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await new_wallet(pool)
    top_up = await backend.grant(ops.grant(wallet_id, 5 * DOLLAR))
    promo = await backend.grant(
        ops.grant(wallet_id, DOLLAR, kind=GrantKind.PROMOTIONAL, priority=1)
    )
    await backend.charge(ops.charge(wallet_id, 3 * DOLLAR))  # promo first, then 2 of the top-up
    with pytest.raises(GrantNotRefundable):
        await backend.refund(ops.refund(wallet_id, promo.grant_id, 1))
    with pytest.raises(RefundExceedsRemaining):
        await backend.refund(ops.refund(wallet_id, top_up.grant_id, 4 * DOLLAR))
    with pytest.raises(ResourceNotFound):
        await backend.refund(ops.refund(wallet_id, "grt_nope", 1))
    held = await backend.authorize(ops.authorize(wallet_id, DOLLAR))
    with pytest.raises(InsufficientFunds):  # one dollar of it is reserved by the hold
        await backend.refund(ops.refund(wallet_id, top_up.grant_id, 3 * DOLLAR))
    await backend.void(ops.void(wallet_id, held.hold_id))
    refunded = await backend.refund(ops.refund(wallet_id, top_up.grant_id, 3 * DOLLAR))
    assert refunded.balance.available == 0
    grants = {g.grant_id: g for g in await backend.grants(wallet_id, START_MS)}
    assert (grants[top_up.grant_id].remaining, grants[top_up.grant_id].refunded) == (0, 3 * DOLLAR)
    await assert_ledger_consistent(pool, wallet_id)


async def test_a_frozen_wallet_refuses_spends_but_captures_its_holds(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    held = await backend.authorize(ops.authorize(wallet_id, DOLLAR))
    frozen = await backend.update_settings(ops.settings(wallet_id, frozen=True))
    assert frozen.balance.frozen
    with pytest.raises(WalletFrozen):
        await backend.authorize(ops.authorize(wallet_id, DOLLAR))
    with pytest.raises(WalletFrozen):
        await backend.charge(ops.charge(wallet_id, DOLLAR))
    with pytest.raises(WalletFrozen):
        await backend.capture(ops.capture(wallet_id, held.hold_id, 2 * DOLLAR, overcapture=True))
    await backend.capture(ops.capture(wallet_id, held.hold_id, DOLLAR))
    await backend.update_settings(ops.settings(wallet_id, frozen=False))
    await backend.charge(ops.charge(wallet_id, DOLLAR))
    await assert_ledger_consistent(pool, wallet_id)


async def test_amounts_are_kept_within_the_exact_range_of_lua_numbers(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, LUA_EXACT_MAX)
    with pytest.raises(BalanceOutOfRange):
        await backend.grant(ops.grant(wallet_id, 1))
    with pytest.raises(AmountOutOfRange):
        await backend.authorize(ops.authorize(wallet_id, 2**53))
    with pytest.raises(ValidationFailed):
        await backend.grant(ops.grant(wallet_id, 0))
    assert (await backend.balance(wallet_id, START_MS)).available == LUA_EXACT_MAX


async def test_unknown_wallet(backend: PostgresBackend) -> None:
    with pytest.raises(UnknownWallet):
        await backend.authorize(ops.authorize("wal_nope", 1))
    with pytest.raises(UnknownWallet):
        await backend.balance("wal_nope", START_MS)


async def test_a_repeated_request_replays_and_a_different_one_is_refused(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    request = ops.authorize(wallet_id, DOLLAR, request_id="same")
    first = await backend.authorize(request)
    again = await backend.authorize(request)
    assert again.replayed and not first.replayed
    assert (again.hold_id, again.entry_ids, again.balance) == (
        first.hold_id,
        first.entry_ids,
        first.balance,
    )
    with pytest.raises(IdempotencyKeyReused):
        await backend.authorize(ops.authorize(wallet_id, 2 * DOLLAR, request_id="same"))
    assert (await backend.balance(wallet_id, START_MS)).held == DOLLAR


async def test_two_hundred_concurrent_authorizations_of_3_on_5_accept_exactly_one(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    outcomes = await asyncio.gather(
        *(backend.authorize(ops.authorize(wallet_id, 3 * DOLLAR)) for _ in range(200)),
        return_exceptions=True,
    )
    counts = Counter(type(outcome).__name__ for outcome in outcomes)
    assert counts == Counter({"AuthorizeResult": 1, "InsufficientFunds": 199})
    assert (await backend.balance(wallet_id, START_MS)).available == 2 * DOLLAR
    await assert_ledger_consistent(pool, wallet_id)


async def test_concurrent_duplicates_apply_once(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    request = ops.charge(wallet_id, DOLLAR, request_id="dup")
    results = await asyncio.gather(*(backend.charge(request) for _ in range(50)))
    assert sum(not r.replayed for r in results) == 1
    assert len({r.entry_ids[0] for r in results}) == 1
    assert (await backend.balance(wallet_id, START_MS)).available == 4 * DOLLAR
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE wallet_id = $1 AND kind = 'charge'",
            wallet_id,
        )
        == 1
    )


async def test_a_mixed_concurrent_workload_keeps_ledger_and_counters_equal(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 50 * DOLLAR, overdraft=5 * DOLLAR)

    async def spend(n: int) -> None:
        try:
            held = await backend.authorize(ops.authorize(wallet_id, (n % 4 + 1) * DOLLAR))
            if n % 3:
                await backend.capture(ops.capture(wallet_id, held.hold_id, n % 4 * DOLLAR))
            else:
                await backend.void(ops.void(wallet_id, held.hold_id))
        except InsufficientFunds:
            pass

    await asyncio.gather(*(spend(n) for n in range(60)))
    balance = await backend.balance(wallet_id, START_MS)
    assert balance.available >= 0 and balance.held == 0
    ledger = await ledger_queries.wallet_balances(pool, wallet_id)
    assert ledger.total == balance.active + balance.overdraft_used
    await assert_ledger_consistent(pool, wallet_id)


async def test_a_new_grant_first_repays_the_overdraft(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await new_wallet(pool, overdraft=3 * DOLLAR)
    await backend.charge(ops.charge(wallet_id, 2 * DOLLAR))
    now = await backend.grant(ops.grant(wallet_id, 5 * DOLLAR))
    assert (now.balance.overdraft_used, now.balance.active) == (0, 3 * DOLLAR)
    later = await backend.grant(
        ops.grant(wallet_id, DOLLAR, kind=GrantKind.INCLUDED, effective_ms=START_MS + HOUR)
    )
    assert later.balance.active == 3 * DOLLAR  # not effective yet
    await backend.charge(ops.charge(wallet_id, 4 * DOLLAR))  # 3 from grants, 1 overdraft
    settled = await backend.balance(wallet_id, START_MS + HOUR)
    assert (settled.overdraft_used, settled.active) == (0, 0)  # the included grant repaid it
    await assert_ledger_consistent(pool, wallet_id)


async def test_a_grant_already_expired_is_refused(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await new_wallet(pool)
    with pytest.raises(ValidationFailed):
        await backend.grant(ops.grant(wallet_id, DOLLAR, expires_ms=START_MS))


async def test_transactions_list_newest_first_with_filters_and_keyset_pages(
    pool: asyncpg.Pool, backend: PostgresBackend
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    await new_wallet(pool)  # another wallet's entries never show
    for n in range(1, 6):
        await backend.charge(ops.charge(wallet_id, n, now_ms=START_MS + n))
    where = ledger_queries.TransactionFilter(wallet_id=wallet_id, kinds=[EntryKind.CHARGE])
    first = await ledger_queries.list_transactions(pool, where, limit=3)
    assert [t.entry.occurred_ms - START_MS for t in first] == [5, 4, 3]
    assert all(t.entry.lines == () for t in first)  # lines only when asked for
    rest = await ledger_queries.list_transactions(
        pool, where, limit=3, after=ledger_queries.page_key(first[-1]), with_lines=True
    )
    assert [t.entry.occurred_ms - START_MS for t in rest] == [2, 1]
    assert sum(line.amount for line in rest[0].entry.lines) == 0
    everything = ledger_queries.TransactionFilter(wallet_id=wallet_id)
    assert len(await ledger_queries.list_transactions(pool, everything, limit=100)) == 6
    windowed = ledger_queries.TransactionFilter(start_ms=START_MS + 2, end_ms=START_MS + 4)
    assert len(await ledger_queries.list_transactions(pool, windowed, limit=100)) == 2
    held = await backend.authorize(ops.authorize(wallet_id, 1))
    await backend.void(ops.void(wallet_id, held.hold_id))
    of_hold = ledger_queries.TransactionFilter(hold_id=held.hold_id)
    kinds = [t.entry.kind for t in await ledger_queries.list_transactions(pool, of_hold, limit=9)]
    assert kinds == [EntryKind.RELEASE, EntryKind.HOLD]
    with pytest.raises(ResourceNotFound):
        await ledger_queries.get_transaction(pool, "txn_nope")


async def test_obol_reconcile_checks_the_postgres_ledger(
    pool: asyncpg.Pool, backend: PostgresBackend, fresh_database: str
) -> None:
    wallet_id = await funded(pool, backend, 5 * DOLLAR)
    await backend.charge(ops.charge(wallet_id, DOLLAR))
    command = [sys.executable, "-m", "obol_cli", "reconcile", "--backend", "postgres"]
    env = {**os.environ, "DATABASE_URL": fresh_database}
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert "reconciled 1 wallets (postgres): no drift" in output.decode()

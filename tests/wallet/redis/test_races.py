"""Concurrency: many clients at once over a pool of connections never break the rules."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Iterable
from typing import TypeVar

from obol_core.errors import ObolError
from obol_wallet.errors import (
    HoldAlreadyCaptured,
    HoldExpired,
    HoldVoided,
    InsufficientFunds,
)
from obol_wallet.model import AuthorizeResult, CaptureResult, HoldState, MutationResult

from .helpers import Harness, idem

T = TypeVar("T")


async def settle_all(calls: Iterable[Awaitable[T]]) -> list[T | ObolError]:
    """Run every call at once (asyncio.gather: many connections from the pool)."""

    async def one(call: Awaitable[T]) -> T | ObolError:
        try:
            return await call
        except ObolError as err:
            return err

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def test_200_concurrent_authorizations_of_3_on_5_accept_one(pooled: Harness) -> None:
    h = pooled
    w = await h.wallet(5)
    results = await settle_all(h.authorize(w, 3) for _ in range(200))
    accepted = [r for r in results if isinstance(r, AuthorizeResult)]
    assert len(accepted) == 1
    assert all(isinstance(r, InsufficientFunds) for r in results if r not in accepted)
    balance = await h.backend.balance(w, h.now)
    assert (balance.held, balance.available) == (3, 2)
    await h.check(w)


async def test_200_concurrent_charges_of_3_on_5_accept_one(pooled: Harness) -> None:
    h = pooled
    w = await h.wallet(5)
    results = await settle_all(h.charge(w, 3) for _ in range(200))
    assert sum(isinstance(r, CaptureResult) for r in results) == 1
    assert sum(isinstance(r, InsufficientFunds) for r in results) == 199
    assert await h.available(w) == 2
    await h.check(w)


async def test_concurrent_captures_and_voids_resolve_each_hold_once(pooled: Harness) -> None:
    h = pooled
    w = await h.wallet(1_000)
    holds = [await h.authorize(w, 50) for _ in range(10)]
    calls: list[Awaitable[MutationResult]] = []
    for hold in holds:
        calls += [h.capture(hold.hold_id, 40) for _ in range(5)]
        calls += [h.void(hold.hold_id) for _ in range(5)]
    results = await settle_all(calls)
    for i, hold in enumerate(holds):
        outcomes = results[i * 10 : (i + 1) * 10]
        winners = [r for r in outcomes if isinstance(r, MutationResult)]
        assert len(winners) == 1
        losers = {type(r) for r in outcomes if r not in winners}
        assert losers <= {HoldAlreadyCaptured, HoldVoided}
        state = (await h.backend.hold(w, hold.hold_id, h.now)).state
        assert state is (
            HoldState.CAPTURED if isinstance(winners[0], CaptureResult) else HoldState.VOIDED
        )
    captured = sum(isinstance(r, CaptureResult) for r in results)
    assert await h.available(w) == 1_000 - 40 * captured
    await h.check(w)


async def test_captures_racing_the_expiry(pooled: Harness) -> None:
    h = pooled
    w = await h.wallet(1_000)
    holds = [await h.authorize(w, 50, ttl_ms=1_000) for _ in range(10)]
    expiry = holds[0].expires_ms
    calls: list[Awaitable[MutationResult]] = []
    for hold in holds:
        for offset in (-1, 0, -1, 1):  # some just before, some at or after the expiry
            h.now = expiry + offset
            calls.append(h.backend.capture(h.capture_request(hold.hold_id, 50)))
            calls.append(h.backend.void(h.void_request(hold.hold_id)))
    results = await settle_all(calls)
    h.now = expiry + 1
    for i, hold in enumerate(holds):
        outcomes = results[i * 8 : (i + 1) * 8]
        winners = [r for r in outcomes if isinstance(r, MutationResult)]
        assert len(winners) <= 1
        assert all(
            isinstance(r, HoldAlreadyCaptured | HoldVoided | HoldExpired)
            for r in outcomes
            if r not in winners
        )
        state = (await h.backend.hold(w, hold.hold_id, h.now)).state
        assert state is not HoldState.OPEN
        assert (state is HoldState.EXPIRED) == (not winners)
    captured = sum(isinstance(r, CaptureResult) for r in results)
    balance = await h.backend.balance(w, h.now)
    assert (balance.held, balance.available) == (0, 1_000 - 50 * captured)
    await h.check(w)


async def test_concurrent_duplicates_apply_once(pooled: Harness) -> None:
    h = pooled
    w = await h.wallet(100)
    request = h.authorize_request(w, 30)
    results = await settle_all(h.backend.authorize(request) for _ in range(100))
    assert all(isinstance(r, AuthorizeResult) for r in results)
    authorized = [r for r in results if isinstance(r, AuthorizeResult)]
    assert Counter(r.replayed for r in authorized) == {False: 1, True: 99}
    first = next(r for r in authorized if not r.replayed)
    assert {dataclasses.replace(r, replayed=False) for r in authorized} == {first}
    assert (await h.backend.balance(w, h.now)).held == 30

    capture = h.capture_request(first.hold_id, 20, request=idem("capture-once"))
    captures = await settle_all(h.backend.capture(capture) for _ in range(100))
    assert sum(isinstance(r, CaptureResult) and not r.replayed for r in captures) == 1
    assert all(isinstance(r, CaptureResult) for r in captures)
    assert await h.available(w) == 80
    assert sum(m.op.value == "capture" for m in await h.messages(w)) == 1
    await h.check(w)


async def test_mixed_traffic_keeps_every_invariant(pooled: Harness) -> None:
    h = pooled
    w = await h.wallet(500, overdraft_limit=100)
    await h.grant(w, 300, expires_ms=h.now + 2_000)
    holds = [await h.authorize(w, 20, ttl_ms=1_500) for _ in range(20)]
    calls: list[Awaitable[object]] = []
    for i, hold in enumerate(holds):
        h.now += 100
        if i % 3 == 0:
            calls.append(
                h.backend.capture(h.capture_request(hold.hold_id, 35, allow_overcapture=True))
            )
        elif i % 3 == 1:
            calls.append(h.backend.void(h.void_request(hold.hold_id)))
        calls.append(h.backend.charge(h.charge_request(w, 25)))
        calls.append(h.backend.authorize(h.authorize_request(w, 40, ttl_ms=500)))
    await settle_all(calls)
    h.now += 5_000
    balance = await h.backend.balance(w, h.now)
    assert balance.held == 0
    assert balance.available >= 0
    await h.check(w)

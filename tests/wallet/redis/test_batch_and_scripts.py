"""Pipelined batches, and scripts that survive a flushed script cache."""

from __future__ import annotations

import dataclasses

from obol_core.errors import AmountOutOfRange
from obol_wallet.errors import HoldAlreadyCaptured, InsufficientFunds
from obol_wallet.model import AuthorizeResult, CaptureResult

from .helpers import Harness


async def test_authorize_many_keeps_request_order_and_refusals(h: Harness) -> None:
    w = await h.wallet(100)
    requests = [h.authorize_request(w, 30) for _ in range(4)]
    bad = dataclasses.replace(h.authorize_request(w, 1), amount=-1)
    results = await h.backend.authorize_many([requests[0], bad, *requests[1:]])
    assert isinstance(results[1], AmountOutOfRange)
    assert [type(r) for r in results] == [
        AuthorizeResult,
        AmountOutOfRange,
        AuthorizeResult,
        AuthorizeResult,
        InsufficientFunds,
    ]
    assert [r.hold_id for r in results if isinstance(r, AuthorizeResult)] == [
        r.hold_id for r in requests[:3]
    ]
    await h.check(w)


async def test_capture_many_and_charge_many(h: Harness) -> None:
    w = await h.wallet(1_000)
    holds = await h.backend.authorize_many([h.authorize_request(w, 100) for _ in range(5)])
    hold_ids = [r.hold_id for r in holds if isinstance(r, AuthorizeResult)]
    captures = [h.capture_request(hold_id, 60) for hold_id in hold_ids]
    done = await h.backend.capture_many([*captures, h.capture_request(hold_ids[0], 1)])
    assert [type(r) for r in done] == [CaptureResult] * 5 + [HoldAlreadyCaptured]
    charged = await h.backend.charge_many([h.charge_request(w, 300) for _ in range(3)])
    assert [type(r) for r in charged] == [CaptureResult, CaptureResult, InsufficientFunds]
    again = await h.backend.charge_many([h.charge_request(w, 300), h.charge_request(w, 100)])
    assert [type(r) for r in again] == [InsufficientFunds, CaptureResult]
    assert await h.available(w) == 0
    await h.check(w)


async def test_batches_of_different_wallets(h: Harness) -> None:
    wallets = [await h.wallet(10) for _ in range(20)]
    results = await h.backend.charge_many([h.charge_request(w, 10) for w in wallets * 2])
    assert [isinstance(r, CaptureResult) for r in results] == [True] * 20 + [False] * 20
    for w in wallets:
        await h.check(w)


async def test_script_flush_is_survived_by_single_calls_and_batches(h: Harness) -> None:
    w = await h.wallet(100)
    await h.client.script_flush()
    hold = await h.authorize(w, 10)  # NOSCRIPT: reloaded, then run once
    await h.client.script_flush()
    results = await h.backend.authorize_many([h.authorize_request(w, 10) for _ in range(3)])
    assert all(isinstance(r, AuthorizeResult) for r in results)
    await h.client.script_flush()
    assert (await h.capture(hold.hold_id, 10)).charged == 10
    await h.client.script_flush()
    assert (await h.backend.balance(w, h.now)).held == 30
    await h.client.script_flush()
    assert await h.backend.sweep(h.now, 10) >= 0
    await h.check(w)

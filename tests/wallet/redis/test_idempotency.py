"""Idempotency: checked in the same Lua call as the change; a replay changes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import pytest

from obol_core.idempotency import IdempotencyKeyReused
from obol_wallet.errors import InsufficientFunds
from obol_wallet.model import (
    Idempotency,
    MutationResult,
    RefundRequest,
    SettingsRequest,
)

from .helpers import Harness, idem

R = TypeVar("R", bound=MutationResult)


async def _replays_identically(h: Harness, w: str, run: Callable[[], Awaitable[R]]) -> R:
    first = await run()
    assert not first.replayed
    messages = len(await h.messages(w))
    balance = await h.backend.balance(w, h.now)
    h.advance(10)  # a later replay still returns the first result
    again = await run()
    assert again.replayed
    assert dataclasses.replace(again, replayed=False) == first
    assert len(await h.messages(w)) == messages, "a replay appends nothing"
    assert (await h.backend.balance(w, h.now)).version == balance.version
    return first


async def test_every_mutation_replays_identically(h: Harness) -> None:
    w = await h.wallet()
    grant_request = h.grant_request(w, 1_000)
    grant = await _replays_identically(h, w, lambda: h.backend.grant(grant_request))
    authorize_request = h.authorize_request(w, 100)
    hold = await _replays_identically(h, w, lambda: h.backend.authorize(authorize_request))
    capture_request = h.capture_request(hold.hold_id, 60)
    await _replays_identically(h, w, lambda: h.backend.capture(capture_request))
    voided = await h.authorize(w, 10)
    void_request = h.void_request(voided.hold_id)
    await _replays_identically(h, w, lambda: h.backend.void(void_request))
    charge_request = h.charge_request(w, 50)
    await _replays_identically(h, w, lambda: h.backend.charge(charge_request))
    refund = RefundRequest(idem(), w, grant.grant_id, "txn_refund", 10, h.now)
    await _replays_identically(h, w, lambda: h.backend.refund(refund))
    settings = SettingsRequest(idem(), w, "txn_settings", h.now, frozen=True)
    await _replays_identically(h, w, lambda: h.backend.update_settings(settings))
    assert await h.available(w) == 1_000 - 60 - 50 - 10
    await h.check(w)


async def test_a_request_id_reused_for_another_request_is_refused(h: Harness) -> None:
    w = await h.wallet(100)
    await h.backend.charge(h.charge_request(w, 10, request=idem("pay-1", "ten")))
    with pytest.raises(IdempotencyKeyReused) as refused:
        await h.backend.charge(h.charge_request(w, 20, request=idem("pay-1", "twenty")))
    assert refused.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert refused.value.metadata["request_id"] == "pay-1"
    assert await h.available(w) == 90
    await h.check(w)


async def test_a_refusal_is_not_recorded_so_a_retry_can_succeed(h: Harness) -> None:
    w = await h.wallet(5)
    request = h.authorize_request(w, 10, request=idem("retry-me"))
    with pytest.raises(InsufficientFunds):
        await h.backend.authorize(request)
    await h.grant(w, 10)
    result = await h.backend.authorize(request)
    assert not result.replayed and result.held == 10
    await h.check(w)


async def test_request_ids_are_scoped_to_the_wallet(h: Harness) -> None:
    a, b = await h.wallet(10), await h.wallet(10)
    shared = Idempotency("same-id", "same-hash")
    await h.backend.charge(h.charge_request(a, 1, request=shared))
    result = await h.backend.charge(h.charge_request(b, 1, request=shared))
    assert not result.replayed
    assert await h.available(b) == 9


async def test_replay_after_the_hold_closed(h: Harness) -> None:
    w = await h.wallet(100)
    hold = await h.authorize(w, 50)
    capture = h.capture_request(hold.hold_id, 20)
    first = await h.backend.capture(capture)
    h.advance(120_000)  # the hold would have expired by now
    again = await h.backend.capture(capture)
    assert again.replayed and dataclasses.replace(again, replayed=False) == first

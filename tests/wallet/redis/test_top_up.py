"""Auto top-up in the Lua scripts: the mirror, the trigger in the spend's own call, the
failure script and the grant that pays an attempt (the gRPC suite covers the behaviour
on both backends; these pin down the Redis keys and fields docs/wallet.md describes)."""

from __future__ import annotations

import json
from dataclasses import replace

from obol_wallet.model import (
    TopUpAttempt,
    TopUpDisabledReason,
    TopUpFailure,
    TopUpRule,
)

from .helpers import START_MS, USD, Harness

RULE = TopUpRule(
    wallet_id="",
    threshold=50,
    amount=20,
    top_up_to=0,
    payment_method_id="pm_ok",
    max_failures=2,
    enabled=True,
    disabled_reason=TopUpDisabledReason.NONE,
    disabled_message="",
    consecutive_failures=0,
    next_attempt_ms=0,
    deleted=False,
    version=1,
    created_ms=START_MS,
    updated_ms=START_MS,
)


async def _hash(h: Harness, wallet_id: str) -> dict[str, str]:
    raw = await h.client.hgetall(h.keys(wallet_id).wallet)
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"tu_")}


async def _queue(h: Harness, wallet_id: str) -> list[dict[str, str]]:
    """The wallet's messages on its partition's {p}:topups stream."""
    messages = await h.client.xrange(h.keys(wallet_id).topups, "-", "+")
    decoded = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in messages]
    return [m for m in decoded if m["w"] == wallet_id]


async def _pending_attempt(h: Harness) -> tuple[str, TopUpAttempt]:
    wallet_id = await h.wallet(100)
    await h.backend.mirror_top_up_rule(replace(RULE, wallet_id=wallet_id))
    assert (await h.charge(wallet_id, 60)).auto_top_up_triggered
    (queued,) = [m for m in await _queue(h, wallet_id) if m["type"] == "attempt"]
    attempt = TopUpAttempt(
        attempt_id=queued["id"],
        wallet_id=wallet_id,
        asset_code=USD,
        amount=int(queued["amount"]),
        payment_method_id=queued["pm"],
        created_ms=int(queued["at"]),
    )
    return wallet_id, attempt


async def test_the_spend_that_crosses_the_threshold_queues_one_attempt(h: Harness) -> None:
    wallet_id = await h.wallet(100)
    await h.backend.mirror_top_up_rule(replace(RULE, wallet_id=wallet_id))
    assert not (await h.charge(wallet_id, 40)).auto_top_up_triggered  # 60 left
    crossing = await h.charge(wallet_id, 20)  # 40 left
    assert crossing.auto_top_up_triggered
    assert not (await h.charge(wallet_id, 1)).auto_top_up_triggered  # one at a time

    seq = (await h.messages(wallet_id))[-2].entries[-1].seq  # the crossing charge's entry
    attempt_id = f"{wallet_id}:{seq}"
    assert (await _hash(h, wallet_id))["tu_pend"] == attempt_id
    queued = await _queue(h, wallet_id)
    assert [(m["type"], m.get("kind", "")) for m in queued] == [
        ("event", "low_balance"),
        ("attempt", ""),
    ]
    assert queued[1] == {
        "type": "attempt",
        "w": wallet_id,
        "id": attempt_id,
        "asset": USD,
        "amount": "20",
        "pm": "pm_ok",
        "at": str(h.now),
    }
    # The flag is in the ledger message too (its stored result).
    assert json.loads((await h.messages(wallet_id))[-2].result)["top_up"] == "1"


async def test_a_failure_is_recorded_once_and_backs_off_then_disables(h: Harness) -> None:
    wallet_id, attempt = await _pending_attempt(h)
    failure = TopUpFailure(attempt, "card_declined", False, h.now, 1000, 5000)
    status = await h.backend.fail_top_up(failure)
    assert (status.recorded, status.consecutive_failures, status.enabled) == (True, 1, True)
    assert status.next_attempt_ms == h.now + 1000
    assert await h.client.zscore(h.keys(wallet_id).topup_due, wallet_id) == h.now + 1000
    repeat = await h.backend.fail_top_up(failure)
    assert (repeat.recorded, repeat.consecutive_failures) == (False, 1)
    assert (await _hash(h, wallet_id))["tu_pend"] == ""

    # The worker's look once the backoff ended starts the next attempt (its own entry).
    assert await h.backend.start_due_top_ups(h.now + 999, 10) == 0
    h.advance(1000)
    assert await h.backend.start_due_top_ups(h.now, 10) == 1
    retry = (await h.messages(wallet_id))[-1]
    assert retry.op.value == "top_up"
    assert retry.entries[-1].memo == {
        "reason": "auto_top_up",
        "attempt_id": f"{wallet_id}:{retry.entries[-1].seq}",
    }
    second = replace(attempt, attempt_id=f"{wallet_id}:{retry.entries[-1].seq}")
    status = await h.backend.fail_top_up(replace(failure, attempt=second, now_ms=h.now))
    assert (status.enabled, status.disabled_reason) == (
        False,
        TopUpDisabledReason.TOO_MANY_FAILURES,
    )
    assert await h.client.zscore(h.keys(wallet_id).topup_due, wallet_id) is None
    kinds = [m.get("kind") for m in await _queue(h, wallet_id) if m["type"] == "event"]
    assert kinds == [
        "low_balance",
        "auto_top_up_failed",
        "auto_top_up_failed",
        "auto_top_up_disabled",
    ]


async def test_the_grant_paying_an_attempt_clears_it_in_its_own_call(h: Harness) -> None:
    wallet_id, attempt = await _pending_attempt(h)
    request = replace(h.grant_request(wallet_id, 20), top_up_attempt=attempt.attempt_id)
    await h.backend.grant(request)
    await h.backend.grant(request)  # a replay changes nothing
    assert (await _hash(h, wallet_id))["tu_pend"] == ""
    succeeded = [m for m in await _queue(h, wallet_id) if m.get("kind") == "auto_top_up_succeeded"]
    assert len(succeeded) == 1
    assert succeeded[0]["id"] == f"{attempt.attempt_id}:succeeded"


async def test_an_older_rule_version_never_overwrites_a_newer_one(h: Harness) -> None:
    wallet_id = await h.wallet(100)
    await h.backend.mirror_top_up_rule(replace(RULE, wallet_id=wallet_id, version=2))
    await h.backend.mirror_top_up_rule(replace(RULE, wallet_id=wallet_id, threshold=10))
    fields = await _hash(h, wallet_id)
    assert (fields["tu_ver"], fields["tu_thr"]) == ("2", "50")
    deleted = replace(RULE, wallet_id=wallet_id, version=3, deleted=True, enabled=False)
    await h.backend.mirror_top_up_rule(deleted)
    assert not (await h.charge(wallet_id, 90)).auto_top_up_triggered

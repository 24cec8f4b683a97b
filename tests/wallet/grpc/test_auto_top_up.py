"""Auto top-up over real gRPC, on both backends: rules, the trigger in the spend's atomic
step (exactly one attempt at a time), the worker (charged once, credited once), retries
with backoff, disabling with an alert, and balance alerts."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2

from obol_wallet.auto_top_up import LEASE_MS, RETRY_BASE_MS, AutoTopUpWorker
from obol_wallet.model import TopUpAttempt, WalletEvent
from obol_wallet.payments import PaymentResult, SandboxPaymentProvider

from .harness import USD, WalletApi, reason_and_fields, selector, usd

DOLLAR = 1_000_000_000


def _rule(
    wallet_id: str,
    request_id: str,
    *,
    threshold: int = 50 * DOLLAR,
    amount: int | None = 20 * DOLLAR,
    top_up_to: int | None = None,
    payment_method_id: str = "pm_ok_visa",
    max_failures: int = 0,
    enabled: bool = True,
) -> wallet_pb2.SetAutoTopUpRuleRequest:
    request = wallet_pb2.SetAutoTopUpRuleRequest(
        wallet_id=wallet_id,
        threshold=usd(threshold),
        payment_method_id=payment_method_id,
        max_failures=max_failures,
        enabled=enabled,
        request_id=request_id,
    )
    if top_up_to is not None:
        request.top_up_to.CopyFrom(usd(top_up_to))
    elif amount is not None:
        request.amount.CopyFrom(usd(amount))
    return request


async def _set(api: WalletApi, request: wallet_pb2.SetAutoTopUpRuleRequest) -> None:
    await api.stub.SetAutoTopUpRule(request)
    # A new rule is due at once: let the worker look (a balance above the threshold only
    # clears the schedule), so each test starts from a quiet rule.
    await api.run_top_ups()


async def _get(api: WalletApi, wallet_id: str) -> wallet_pb2.AutoTopUpRule:
    reply = await api.stub.GetAutoTopUpRule(wallet_pb2.GetAutoTopUpRuleRequest(wallet_id=wallet_id))
    return reply.rule


async def _charge(api: WalletApi, wallet_id: str, amount: int, request_id: str) -> bool:
    """Charge; whether it started an auto top-up attempt."""
    reply = await api.stub.Charge(
        wallet_pb2.ChargeRequest(
            request_id=request_id, wallet=selector(wallet_id), amount=usd(amount)
        )
    )
    return reply.auto_top_up_triggered


async def _auto_top_ups(api: WalletApi, wallet_id: str) -> list[int]:
    """What each auto top-up credited, from the ledger: TOP_UP entries (purchased grants)
    that name their attempt."""
    await api.drain_ledger()
    rows = await api.pool.fetch(
        """SELECT l.amount FROM ledger_entries e JOIN ledger_lines l USING (entry_id)
           WHERE e.wallet_id = $1 AND e.kind = 'top_up' AND e.memo ? 'auto_top_up_attempt'
             AND l.account LIKE 'wallet:%:grant:%' AND l.amount > 0
           ORDER BY e.seq""",
        wallet_id,
    )
    return [row["amount"] for row in rows]


async def _events(api: WalletApi, wallet_id: str) -> Counter[str]:
    await api.run_top_ups()  # Redis: events reach Postgres through the worker
    rows = await api.pool.fetch("SELECT kind FROM wallet_events WHERE wallet_id = $1", wallet_id)
    return Counter(row["kind"] for row in rows)


async def _attempts(api: WalletApi, wallet_id: str) -> list[tuple[str, str]]:
    rows = await api.pool.fetch(
        "SELECT state, error FROM auto_topup_attempts WHERE wallet_id = $1 ORDER BY seq",
        wallet_id,
    )
    return [(row["state"], row["error"]) for row in rows]


# ---- rules ----


async def test_set_get_replace_and_delete_a_rule(api: WalletApi) -> None:
    wallet_id = await api.wallet(100 * DOLLAR)
    first = _rule(wallet_id, "rule-1", max_failures=0)
    set_reply = await api.stub.SetAutoTopUpRule(first)
    rule = set_reply.rule
    assert (rule.wallet_id, rule.threshold, rule.amount) == (
        wallet_id,
        usd(50 * DOLLAR),
        usd(20 * DOLLAR),
    )
    assert (rule.payment_method_id, rule.max_failures, rule.enabled) == ("pm_ok_visa", 3, True)
    assert rule.disabled_reason == wallet_pb2.AUTO_TOP_UP_DISABLED_REASON_UNSPECIFIED
    assert rule.status.last_outcome == wallet_pb2.AUTO_TOP_UP_OUTCOME_UNSPECIFIED
    assert rule.create_time.ToMilliseconds() == api.clock.now
    assert await _get(api, wallet_id) == rule

    # Idempotent on request_id: a repeat answers the same; another request under it is refused.
    assert await api.stub.SetAutoTopUpRule(first) == set_reply
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await api.stub.SetAutoTopUpRule(_rule(wallet_id, "rule-1", threshold=DOLLAR))
    assert reason_and_fields(reused.value)[0] == "IDEMPOTENCY_KEY_REUSED"

    # Set replaces the whole rule.
    api.clock.advance(1000)
    replaced = _rule(wallet_id, "rule-2", amount=None, top_up_to=80 * DOLLAR, enabled=False)
    rule = (await api.stub.SetAutoTopUpRule(replaced)).rule
    assert rule.WhichOneof("top_up") == "top_up_to"
    assert rule.top_up_to == usd(80 * DOLLAR)
    assert not rule.enabled
    assert rule.disabled_reason == wallet_pb2.AUTO_TOP_UP_DISABLED_REASON_OPERATOR
    assert rule.update_time.ToMilliseconds() == api.clock.now
    assert await _get(api, wallet_id) == rule

    delete = wallet_pb2.DeleteAutoTopUpRuleRequest(wallet_id=wallet_id, request_id="del-1")
    await api.stub.DeleteAutoTopUpRule(delete)
    await api.stub.DeleteAutoTopUpRule(delete)  # a replay
    for call in (
        _get(api, wallet_id),
        api.stub.DeleteAutoTopUpRule(
            wallet_pb2.DeleteAutoTopUpRuleRequest(wallet_id=wallet_id, request_id="del-2")
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert reason_and_fields(missing.value)[0] == "RESOURCE_NOT_FOUND"

    # A deleted rule no longer fires.
    assert not await _charge(api, wallet_id, 90 * DOLLAR, "after-delete")
    await api.run_top_ups()
    assert api.payments.calls == 0


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        (
            {"threshold": money_pb2.Money(asset_code=USD, amount=-1)},
            "VALIDATION_FAILED",
            "threshold",
        ),
        ({"amount": usd(0)}, "VALIDATION_FAILED", "amount"),
        ({"top_up_to": usd(10)}, "VALIDATION_FAILED", ""),  # not above the threshold
        ({"payment_method_id": ""}, "VALIDATION_FAILED", "payment_method_id"),
        ({"max_failures": 101}, "VALIDATION_FAILED", "max_failures"),
        ({"request_id": ""}, "VALIDATION_FAILED", "request_id"),
        (
            {"threshold": money_pb2.Money(asset_code="EUR", amount=1)},
            "ASSET_MISMATCH",
            "threshold.asset_code",
        ),
        (
            {"amount": money_pb2.Money(asset_code="EUR", amount=1)},
            "ASSET_MISMATCH",
            "amount.asset_code",
        ),
    ],
)
async def test_bad_rules_are_refused_naming_the_field(
    api: WalletApi, change: dict[str, object], reason: str, field: str
) -> None:
    wallet_id = await api.wallet()
    request = _rule(wallet_id, "bad", threshold=100)
    for name, value in change.items():
        if isinstance(value, money_pb2.Money):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.stub.SetAutoTopUpRule(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got_reason, fields = reason_and_fields(refused.value)
    assert got_reason == reason
    if field:
        assert field in fields
    else:  # a rule across fields: its message names them
        assert "top_up_to" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _get(api, wallet_id)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_rules_of_unknown_wallets_are_refused(api: WalletApi) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await api.stub.SetAutoTopUpRule(_rule("wal_01JUNKNOWNUNKNOWNUNKNOWN00", "r"))
    assert (unknown.value.code(), reason_and_fields(unknown.value)[0]) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_WALLET",
    )


# ---- the trigger ----


async def test_fifty_concurrent_spends_crossing_the_threshold_start_exactly_one_attempt(
    api: WalletApi,
) -> None:
    wallet_id = await api.wallet(100 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", threshold=50 * DOLLAR, amount=20 * DOLLAR))
    flags = await asyncio.gather(
        *(_charge(api, wallet_id, 2 * DOLLAR, f"spend-{i}") for i in range(50))
    )
    assert flags.count(True) == 1
    assert await api.available(wallet_id) == 0
    assert (await _get(api, wallet_id)).status.last_outcome in (
        wallet_pb2.AUTO_TOP_UP_OUTCOME_UNSPECIFIED,  # Redis: Postgres learns of it when run
        wallet_pb2.AUTO_TOP_UP_OUTCOME_IN_PROGRESS,
    )

    await api.run_top_ups()
    assert len(api.payments.succeeded) == 1
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]
    assert await api.available(wallet_id) == 20 * DOLLAR
    assert await _attempts(api, wallet_id) == [("succeeded", "")]
    await api.run_top_ups()
    assert api.payments.calls == 1  # nothing more to do


async def test_an_attempt_pays_out_one_grant_and_stops_being_pending(api: WalletApi) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", threshold=50 * DOLLAR, amount=20 * DOLLAR))
    assert await _charge(api, wallet_id, 15 * DOLLAR, "cross")  # 45 left: below 50
    assert not await _charge(api, wallet_id, DOLLAR, "pending")  # one at a time
    await api.run_top_ups()
    assert await api.available(wallet_id) == 64 * DOLLAR
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]
    rule = await _get(api, wallet_id)
    assert rule.status.last_outcome == wallet_pb2.AUTO_TOP_UP_OUTCOME_SUCCEEDED
    grants = await api.stub.ListGrants(wallet_pb2.ListGrantsRequest(wallet=selector(wallet_id)))
    (grant,) = [g for g in grants.grants if g.grant_id == rule.status.last_grant_id]
    assert (grant.kind, grant.amount) == (wallet_pb2.GRANT_KIND_PURCHASED, usd(20 * DOLLAR))
    assert rule.status.consecutive_failures == 0
    # No longer pending: the next crossing starts the next attempt.
    assert await _charge(api, wallet_id, 20 * DOLLAR, "cross-again")
    await api.run_top_ups()
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR, 20 * DOLLAR]
    assert len(api.payments.succeeded) == 2
    assert await _events(api, wallet_id) == Counter({"low_balance": 2, "auto_top_up_succeeded": 2})


async def test_top_up_to_buys_what_reaches_the_target(api: WalletApi) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", threshold=50 * DOLLAR, top_up_to=100 * DOLLAR))
    assert await _charge(api, wallet_id, 30 * DOLLAR, "cross")  # 30 left
    await api.run_top_ups()
    assert await _auto_top_ups(api, wallet_id) == [70 * DOLLAR]
    assert await api.available(wallet_id) == 100 * DOLLAR


async def test_authorize_and_capture_trigger_too(api: WalletApi) -> None:
    wallet_id = await api.wallet(100 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", threshold=50 * DOLLAR))
    held = await api.stub.Authorize(
        wallet_pb2.AuthorizeRequest(
            request_id="hold",
            wallet=selector(wallet_id),
            amount=usd(10 * DOLLAR),
            ttl=Duration(seconds=60),
        )
    )
    captured = await api.stub.Capture(
        wallet_pb2.CaptureRequest(
            request_id="capture",
            hold_id=held.hold_id,
            amount=usd(70 * DOLLAR),
            allow_overcapture=True,
        )
    )
    assert captured.auto_top_up_triggered
    await api.run_top_ups()
    assert await api.available(wallet_id) == 50 * DOLLAR
    # An authorization that crosses starts one too (its response has no flag).
    await api.stub.Authorize(
        wallet_pb2.AuthorizeRequest(
            request_id="hold-2",
            wallet=selector(wallet_id),
            amount=usd(DOLLAR),
            ttl=Duration(seconds=60),
        )
    )
    await api.run_top_ups()
    assert len(api.payments.succeeded) == 2


async def test_a_rule_set_below_the_threshold_tops_up_without_a_spend(api: WalletApi) -> None:
    wallet_id = await api.wallet()
    await api.stub.SetAutoTopUpRule(_rule(wallet_id, "rule", threshold=5 * DOLLAR))
    await api.run_top_ups()
    assert await api.available(wallet_id) == 20 * DOLLAR
    assert len(api.payments.succeeded) == 1


# ---- exactly once across a crash ----


class _CrashAfterCharging(SandboxPaymentProvider):
    """Charges, then "crashes" before the worker can credit (the first time only)."""

    def __init__(self) -> None:
        super().__init__()
        self.crashed = False

    async def charge(
        self, *, idempotency_key: str, payment_method_id: str, asset_code: str, amount: int
    ) -> PaymentResult:
        result = await super().charge(
            idempotency_key=idempotency_key,
            payment_method_id=payment_method_id,
            asset_code=asset_code,
            amount=amount,
        )
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("worker died after the charge")
        return result


async def test_an_attempt_run_again_after_a_crash_charges_once_and_credits_once(
    api: WalletApi,
) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", threshold=50 * DOLLAR, amount=20 * DOLLAR))
    assert await _charge(api, wallet_id, 20 * DOLLAR, "cross")  # 40 left
    payments = _CrashAfterCharging()
    worker = AutoTopUpWorker(api.pool, api.backend, payments, api.clock, consumer="test")
    await worker.run_once()  # crashed after the charge: the attempt is unfinished
    assert await api.available(wallet_id) == 40 * DOLLAR

    api.clock.advance(LEASE_MS)  # the Postgres backend's lease runs out
    await worker.run_once()
    assert len(payments.succeeded) == 1
    assert payments.calls == 2  # the second call got the first charge back
    assert await api.available(wallet_id) == 60 * DOLLAR
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]


async def test_an_attempt_run_again_after_its_grant_credits_once(
    api: WalletApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", threshold=50 * DOLLAR, amount=20 * DOLLAR))
    assert await _charge(api, wallet_id, 20 * DOLLAR, "cross")
    done = api.backend.top_up_done

    async def crash(item: TopUpAttempt | WalletEvent) -> None:
        raise ConnectionError("worker died before acknowledging")

    monkeypatch.setattr(api.backend, "top_up_done", crash)
    await api.run_top_ups()  # charged and credited, never acknowledged
    assert await api.available(wallet_id) == 60 * DOLLAR
    monkeypatch.setattr(api.backend, "top_up_done", done)

    api.clock.advance(LEASE_MS)
    await api.run_top_ups()
    await api.run_top_ups()
    assert len(api.payments.succeeded) == 1
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]
    assert await api.available(wallet_id) == 60 * DOLLAR
    assert await _attempts(api, wallet_id) == [("succeeded", "")]


# ---- failures ----


async def test_failures_retry_with_backoff_then_disable_the_rule_with_an_alert(
    api: WalletApi,
) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", payment_method_id="pm_fail_card", max_failures=3))
    assert await _charge(api, wallet_id, 20 * DOLLAR, "cross")
    await api.run_top_ups()
    rule = await _get(api, wallet_id)
    assert rule.enabled
    assert (rule.status.consecutive_failures, rule.status.last_error) == (1, "card_declined")
    assert rule.status.last_outcome == wallet_pb2.AUTO_TOP_UP_OUTCOME_FAILED
    first_retry = api.clock.now + RETRY_BASE_MS
    assert rule.status.next_attempt_time.ToMilliseconds() == first_retry

    # Within the backoff neither spends nor the worker start another attempt.
    assert not await _charge(api, wallet_id, DOLLAR, "during-backoff")
    api.clock.advance(RETRY_BASE_MS - 1)
    await api.run_top_ups()
    assert api.payments.calls == 1

    # Then the worker retries by itself (no spend needed), with a doubled backoff.
    api.clock.advance(1)
    await api.run_top_ups()
    rule = await _get(api, wallet_id)
    assert (api.payments.calls, rule.status.consecutive_failures) == (2, 2)
    assert rule.status.next_attempt_time.ToMilliseconds() == api.clock.now + 2 * RETRY_BASE_MS

    api.clock.advance(2 * RETRY_BASE_MS)
    await api.run_top_ups()
    rule = await _get(api, wallet_id)
    assert api.payments.calls == 3
    assert not rule.enabled
    assert rule.disabled_reason == wallet_pb2.AUTO_TOP_UP_DISABLED_REASON_TOO_MANY_FAILURES
    assert "3 payments failed" in rule.disabled_message
    assert rule.status.consecutive_failures == 3
    assert not rule.status.HasField("next_attempt_time")
    assert await _attempts(api, wallet_id) == [("failed", "card_declined")] * 3

    # Disabled: no more attempts, whatever happens.
    api.clock.advance(10 * RETRY_BASE_MS)
    assert not await _charge(api, wallet_id, DOLLAR, "after-disable")
    await api.run_top_ups()
    assert api.payments.calls == 3
    assert api.payments.succeeded == []
    assert await _events(api, wallet_id) == Counter(
        {"low_balance": 1, "auto_top_up_failed": 3, "auto_top_up_disabled": 1}
    )

    # Setting the rule again enables it with its failures reset.
    await api.stub.SetAutoTopUpRule(_rule(wallet_id, "rule-again", payment_method_id="pm_ok_2"))
    assert (await _get(api, wallet_id)).status.consecutive_failures == 0
    await api.run_top_ups()  # below the threshold already: tops up without a spend
    assert len(api.payments.succeeded) == 1
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]  # written behind too
    verified = await api.stub.VerifyLedger(wallet_pb2.VerifyLedgerRequest(wallet_id=wallet_id))
    assert verified.valid and verified.balance_matches


async def test_an_unusable_payment_method_disables_the_rule_at_once(api: WalletApi) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", payment_method_id="card_removed"))
    assert await _charge(api, wallet_id, 20 * DOLLAR, "cross")
    await api.run_top_ups()
    rule = await _get(api, wallet_id)
    assert not rule.enabled
    assert rule.disabled_reason == wallet_pb2.AUTO_TOP_UP_DISABLED_REASON_PAYMENT_METHOD_INVALID
    assert "card_removed" in rule.disabled_message
    assert (await _events(api, wallet_id))["auto_top_up_disabled"] == 1


async def test_a_wallet_reaching_zero_raises_a_depleted_alert(api: WalletApi) -> None:
    wallet_id = await api.wallet(10 * DOLLAR)  # no rule needed
    await _charge(api, wallet_id, 4 * DOLLAR, "some")
    await _charge(api, wallet_id, 6 * DOLLAR, "all")
    assert await _events(api, wallet_id) == Counter({"depleted": 1})

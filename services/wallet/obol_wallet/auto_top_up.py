"""The auto top-up worker: runs the attempts that spends started (docs/wallet.md).

A background task of the wallet service. Each round:

1. `start_due_top_ups`: wallets whose retry backoff ended (or whose rule was just set)
   get an attempt if their balance is still below the threshold.
2. `take_top_ups`: this worker's attempts (and, on Redis, the events to record).
3. Per attempt: its row in Postgres (pending; never charged before it is there), then the
   payment, with the attempt id as idempotency key, then
   - paid: a PURCHASED grant whose request_id is the attempt id; the grant's own atomic
     step stops the attempt being pending (and emits `auto_top_up_succeeded`);
   - declined: `fail_top_up`, whose atomic step counts the failure and schedules the retry
     or disables the rule (emitting `auto_top_up_failed`, `auto_top_up_disabled`);
   then the outcome on the Postgres rows, and `top_up_done`.

Any error leaves the item unfinished: it comes back (Redis: at the worker's next round, or
to another worker once idle for the lease; Postgres: when its lease ends) and runs again.
Running an attempt twice is harmless: the provider returns the first charge for the same
key, the grant's request_id replays the first grant, a failure is recorded only while the
attempt is pending, and event ids are derived from the attempt. So is running an attempt
that `obol rebuild` queued again after the wallet's hot state was lost, even while the run
that started before the loss is still going (docs/decisions.md D13). An attempt that was
lost before its row was written is void: the rebuild fenced the wallet, the row is refused
and the attempt leaves the queue without a charge.
"""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
import structlog
from opentelemetry import metrics

from obol_core.cancellation import raise_if_cancelling
from obol_core.ids import new_id, new_ulid

from . import top_up_store
from .backend import WalletBackend
from .clock import Clock
from .model import (
    DEFAULT_PRIORITY,
    NEVER_EXPIRES,
    GrantKind,
    GrantRequest,
    Idempotency,
    TopUpAttempt,
    TopUpDisabledReason,
    TopUpFailure,
    TopUpStatus,
    WalletEvent,
)
from .partitions import grant_id_for
from .payments import PaymentOutcome, PaymentProvider, PaymentResult
from .settings import TOP_UP_LEASE_SECONDS, TOP_UP_RETRY_BASE_SECONDS, TOP_UP_RETRY_MAX_SECONDS

RETRY_BASE_MS = TOP_UP_RETRY_BASE_SECONDS * 1000  # the first retry; doubled per failure
RETRY_MAX_MS = TOP_UP_RETRY_MAX_SECONDS * 1000
LEASE_MS = TOP_UP_LEASE_SECONDS * 1000  # an unfinished attempt goes to another worker then
BATCH = 100
INTERVAL_SECONDS = 1.0

# The reasons a rule disables itself (the operator's own is not an alert).
_AUTOMATIC = (TopUpDisabledReason.TOO_MANY_FAILURES, TopUpDisabledReason.PAYMENT_METHOD_INVALID)

_log = structlog.get_logger("obol.wallet.auto_top_up")
_attempts = metrics.get_meter("obol.wallet").create_counter(
    "obol.wallet.auto_top_up.attempts",
    unit="{attempt}",
    description="Auto top-up attempts run, by outcome (succeeded, failed, disabled, void)",
)


def _request_hash(attempt: TopUpAttempt, payment: PaymentResult) -> str:
    """The grant's idempotency hash: the same for every run of the attempt."""
    text = f"auto_top_up|{attempt.attempt_id}|{attempt.amount}|{payment.payment_id}"
    return hashlib.sha256(text.encode()).hexdigest()


def _disabled_message(failure: TopUpFailure, status: TopUpStatus) -> str:
    if status.disabled_reason is TopUpDisabledReason.PAYMENT_METHOD_INVALID:
        return (
            f"payment method {failure.attempt.payment_method_id} cannot be charged: {failure.error}"
        )
    if status.disabled_reason is TopUpDisabledReason.TOO_MANY_FAILURES:
        return f"{status.consecutive_failures} payments failed in a row; last: {failure.error}"
    return ""


class AutoTopUpWorker:
    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        backend: WalletBackend,
        provider: PaymentProvider,
        clock: Clock,
        *,
        consumer: str,
        retry_base_ms: int = RETRY_BASE_MS,
        retry_max_ms: int = RETRY_MAX_MS,
        lease_ms: int = LEASE_MS,
        batch: int = BATCH,
    ) -> None:
        self._pool = pool
        self._backend = backend
        self._provider = provider
        self._clock = clock
        self._consumer = consumer
        self._retry_base_ms = retry_base_ms
        self._retry_max_ms = retry_max_ms
        self._lease_ms = lease_ms
        self._batch = batch

    async def run(self) -> None:
        """Work until cancelled; a failed round is logged and the next one tries again."""
        while True:
            raise_if_cancelling()  # also when a handler inside the round swallowed it
            try:
                handled = await self.run_once()
            except Exception:
                raise_if_cancelling()
                _log.exception("auto top-up round failed")
                handled = 0
            if handled < self._batch:
                await asyncio.sleep(INTERVAL_SECONDS)

    async def run_once(self) -> int:
        """One round (see the module docstring); returns how many items it finished."""
        now_ms = self._clock.now_ms()
        await self._backend.start_due_top_ups(now_ms, self._batch)
        items = await self._backend.take_top_ups(
            self._consumer, now_ms, self._batch, self._lease_ms
        )
        finished = 0
        for item in items:
            try:
                if isinstance(item, WalletEvent):
                    async with self._pool.acquire() as conn:
                        await top_up_store.insert_events(conn, [item])
                else:
                    await self._run(item)
                await self._backend.top_up_done(item)
                finished += 1
            except Exception:  # unfinished: it comes back and runs again
                _log.exception("auto top-up item failed; it will run again", item=repr(item))
        return finished

    async def _run(self, attempt: TopUpAttempt) -> None:
        # Recorded (durably, as pending) before anything is charged: a rebuild of the
        # wallet's hot state restores exactly the attempts recorded here (D13).
        if not await top_up_store.record_attempt(self._pool, attempt):
            # Void: lost with the wallet's hot state before it was recorded, so never
            # charged, and the rebuilt wallet does not know it (it may have started
            # another one). It leaves the queue uncharged.
            _attempts.add(1, {"outcome": "void"})
            _log.warning(
                "auto top-up attempt void: lost with the hot state before it ran",
                attempt_id=attempt.attempt_id,
            )
            return
        payment = await self._provider.charge(
            idempotency_key=attempt.attempt_id,
            payment_method_id=attempt.payment_method_id,
            asset_code=attempt.asset_code,
            amount=attempt.amount,
        )
        if payment.outcome is PaymentOutcome.SUCCEEDED:
            await self._paid(attempt, payment)
        else:
            await self._failed(attempt, payment)

    async def _paid(self, attempt: TopUpAttempt, payment: PaymentResult) -> None:
        now_ms = self._clock.now_ms()
        wallet_id = attempt.wallet_id
        result = await self._backend.grant(
            GrantRequest(
                idem=Idempotency(attempt.attempt_id, _request_hash(attempt, payment)),
                wallet_id=wallet_id,
                grant_id=grant_id_for(wallet_id, new_ulid()),
                entry_id=new_id("txn"),
                kind=GrantKind.PURCHASED,
                amount=attempt.amount,
                priority=DEFAULT_PRIORITY,
                effective_ms=now_ms,
                expires_ms=NEVER_EXPIRES,
                now_ms=now_ms,
                memo={
                    "auto_top_up_attempt": attempt.attempt_id,
                    "payment_reference": payment.payment_id,
                    "payment_method_id": attempt.payment_method_id,
                },
                top_up_attempt=attempt.attempt_id,
            )
        )
        async with self._pool.acquire() as conn:
            await top_up_store.attempt_paid(
                conn, wallet_id, attempt.attempt_id, result.grant_id, now_ms
            )
        if not result.replayed:
            _attempts.add(1, {"outcome": "succeeded"})
            _log.info("auto top-up paid", attempt_id=attempt.attempt_id, grant_id=result.grant_id)

    async def _failed(self, attempt: TopUpAttempt, payment: PaymentResult) -> None:
        failure = TopUpFailure(
            attempt=attempt,
            error=payment.message,
            method_invalid=payment.outcome is PaymentOutcome.INVALID,
            now_ms=self._clock.now_ms(),
            retry_base_ms=self._retry_base_ms,
            retry_max_ms=self._retry_max_ms,
        )
        status = await self._backend.fail_top_up(failure)
        async with self._pool.acquire() as conn, conn.transaction():
            await top_up_store.attempt_failed(
                conn, attempt.attempt_id, failure.error, failure.now_ms
            )
            await top_up_store.record_status(
                conn, attempt.wallet_id, status, _disabled_message(failure, status), failure.now_ms
            )
        if not status.recorded:
            return
        if status.enabled or status.disabled_reason not in _AUTOMATIC:
            _attempts.add(1, {"outcome": "failed"})
            _log.warning(
                "auto top-up payment failed",
                attempt_id=attempt.attempt_id,
                error=failure.error,
                consecutive_failures=status.consecutive_failures,
                next_attempt_ms=status.next_attempt_ms,
            )
        else:
            _attempts.add(1, {"outcome": "disabled"})
            _log.error(
                "auto top-up payment failed; the rule is disabled",
                attempt_id=attempt.attempt_id,
                error=failure.error,
                reason=status.disabled_reason.value,
            )

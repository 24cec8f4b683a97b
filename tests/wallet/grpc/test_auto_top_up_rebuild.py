"""Auto top-up across a lost Redis hot state and `obol rebuild` (docs/decisions.md D13):
the attempt in flight (recorded as pending in Postgres before it is charged) is pending
again in the rebuilt wallet, so no spend starts a second one, and the worker completes it
with exactly one charge, one grant and one ledger entry, also while the run that started
before the loss is still going; an attempt lost before it was recorded is void, never
charged, and the rule starts exactly one new attempt instead."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import grpc
import grpc.aio
import pytest
from infra.cli import run_obol
from obol.wallet.v1 import wallet_pb2

from obol_cli.commands.rebuild import rebuild_hot_state
from obol_cli.errors import ObolCliError
from obol_wallet import top_up_store
from obol_wallet.auto_top_up import LEASE_MS, AutoTopUpWorker
from obol_wallet.model import TopUpAttempt, WalletEvent
from obol_wallet.partitions import keys_for
from obol_wallet.payments import PaymentResult, SandboxPaymentProvider

from .harness import PARTITIONS, WalletApi, selector
from .test_auto_top_up import (
    DOLLAR,
    _attempts,
    _auto_top_ups,
    _charge,
    _CrashAfterCharging,
    _rule,
    _set,
)

RETENTION_SECONDS = 7 * 86400


async def _rebuild(api: WalletApi, *, apply_stream: bool = False) -> list[str]:
    """`obol rebuild` in process, on the test's clock."""
    lines: list[str] = []
    rebuilt = await rebuild_hot_state(
        api.pool,
        api.redis,
        partitions=PARTITIONS,
        idempotency_ttl_seconds=RETENTION_SECONDS,
        apply_stream=apply_stream,
        now_ms=api.clock.now,
        say=lines.append,
    )
    assert (
        lines[-1]
        == f"obol: {len(rebuilt)} of {len(rebuilt)} wallets rebuilt, the others were hydrated"
    )
    return rebuilt


async def _pending(api: WalletApi, wallet_id: str) -> str | None:
    """The wallet's attempt in flight in its hot state (`tu_pend`; None: no such field)."""
    value = await api.redis.hget(keys_for(wallet_id, PARTITIONS).wallet, "tu_pend")
    return None if value is None else value.decode()


async def _queued(api: WalletApi, wallet_id: str) -> list[str]:
    """Ids of the wallet's attempts on its partition's {p}:topups stream."""
    messages = await api.redis.xrange(keys_for(wallet_id, PARTITIONS).topups, "-", "+")
    return [
        fields[b"id"].decode()
        for _, fields in messages
        if fields[b"type"] == b"attempt" and fields[b"w"].decode() == wallet_id
    ]


async def _crossing(api: WalletApi) -> tuple[str, str]:
    """A $60 wallet with a rule (below $50: buy $20) and a $20 charge that crosses the
    threshold: the attempt it started, only in Redis so far. Returns (wallet, attempt)."""
    wallet_id = await api.wallet(60 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", threshold=50 * DOLLAR, amount=20 * DOLLAR))
    assert await _charge(api, wallet_id, 20 * DOLLAR, "cross")  # $40 left
    attempt_id = await _pending(api, wallet_id)
    assert attempt_id is not None and attempt_id.startswith(f"{wallet_id}:")
    assert await _attempts(api, wallet_id) == []  # the worker has not taken it yet
    return wallet_id, attempt_id


async def _refused(api: WalletApi, wallet_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.stub.GetWallet(wallet_pb2.GetWalletRequest(wallet=selector(wallet_id)))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def _grant_of_attempt(api: WalletApi, attempt_id: str) -> str:
    grant_id: str = await api.pool.fetchval(
        "SELECT grant_id FROM auto_topup_attempts WHERE attempt_id = $1", attempt_id
    )
    return grant_id


class _Audited(SandboxPaymentProvider):
    """Notes, at each charge, what Postgres holds of the attempt being charged."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        super().__init__()
        self._pool = pool
        self.rows_at_charge: list[str | None] = []

    async def charge(
        self, *, idempotency_key: str, payment_method_id: str, asset_code: str, amount: int
    ) -> PaymentResult:
        self.rows_at_charge.append(
            await self._pool.fetchval(
                "SELECT state FROM auto_topup_attempts WHERE attempt_id = $1", idempotency_key
            )
        )
        return await super().charge(
            idempotency_key=idempotency_key,
            payment_method_id=payment_method_id,
            asset_code=asset_code,
            amount=amount,
        )


async def test_every_attempt_is_recorded_as_pending_before_it_is_charged(api: WalletApi) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _set(api, _rule(wallet_id, "rule", threshold=50 * DOLLAR, amount=20 * DOLLAR))
    assert await _charge(api, wallet_id, 20 * DOLLAR, "cross")
    payments = _Audited(api.pool)
    await AutoTopUpWorker(api.pool, api.backend, payments, api.clock, consumer="w").run_once()
    assert payments.rows_at_charge == ["pending"]
    assert await _attempts(api, wallet_id) == [("succeeded", "")]


async def test_an_attempt_charged_before_redis_was_lost_completes_once_after_rebuild(
    redis_api: WalletApi, fresh_database: str
) -> None:
    api = redis_api
    wallet_id, attempt_id = await _crossing(api)
    payments = _CrashAfterCharging()
    worker = AutoTopUpWorker(api.pool, api.backend, payments, api.clock, consumer="w1")
    await worker.run_once()  # recorded as pending, charged, then died before crediting
    assert await _attempts(api, wallet_id) == [("pending", "")]
    assert [c.idempotency_key for c in payments.succeeded] == [attempt_id]

    await api.drain_ledger()
    await api.redis.flushdb()  # Redis lost everything: hot state, streams, consumer groups
    await _refused(api, wallet_id)

    connection = api.redis.connection_pool.connection_kwargs
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database,
        "REDIS_URL": f"redis://{connection['host']}:{connection['port']}/{connection['db']}",
        "OBOL_WALLET_PARTITIONS": str(PARTITIONS),
    }
    code, output = await run_obol(env, "rebuild")
    assert code == 0, output
    assert f"obol: auto top-up attempt {attempt_id} is pending again" in output
    assert await _pending(api, wallet_id) == attempt_id
    assert await _queued(api, wallet_id) == [attempt_id]  # queued again for the worker

    # Below the threshold with the attempt pending: no spend starts a second one.
    assert not await _charge(api, wallet_id, DOLLAR, "after-rebuild")  # $39 left
    assert not await _charge(api, wallet_id, DOLLAR, "after-rebuild-2")  # $38 left
    assert await _queued(api, wallet_id) == [attempt_id]

    # The same worker process goes on (its consumer group is back): one charge, one grant.
    api.clock.advance(LEASE_MS)
    await worker.run_once()
    assert [c.idempotency_key for c in payments.succeeded] == [attempt_id]
    assert payments.calls == 2  # the second call got the first charge back
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]  # one ledger entry
    assert await _attempts(api, wallet_id) == [("succeeded", "")]
    assert await api.available(wallet_id) == 58 * DOLLAR
    assert await _pending(api, wallet_id) == ""
    grants = await api.stub.ListGrants(wallet_pb2.ListGrantsRequest(wallet=selector(wallet_id)))
    paid = [g for g in grants.grants if g.grant_id == await _grant_of_attempt(api, attempt_id)]
    assert [g.amount.amount for g in paid] == [20 * DOLLAR]
    assert await _queued(api, wallet_id) == []
    await worker.run_once()
    assert payments.calls == 2  # nothing more to do

    verified = await api.stub.VerifyLedger(wallet_pb2.VerifyLedgerRequest(wallet_id=wallet_id))
    assert verified.valid and verified.balance_matches
    code, output = await run_obol(env, "reconcile")
    assert code == 0, output


async def test_a_lost_wallet_hash_with_its_attempt_still_queued_credits_once(
    redis_api: WalletApi,
) -> None:
    api = redis_api
    wallet_id, attempt_id = await _crossing(api)
    payments = _CrashAfterCharging()
    worker = AutoTopUpWorker(api.pool, api.backend, payments, api.clock, consumer="w1")
    await worker.run_once()  # recorded, charged, died: its message stays unfinished
    await api.backend.drop_hot_state(wallet_id)  # the wallet's keys only; streams stay

    with pytest.raises(ObolCliError, match="unwritten messages"):
        await _rebuild(api)
    assert await _rebuild(api, apply_stream=True) == [wallet_id]
    assert await _pending(api, wallet_id) == attempt_id
    assert await _queued(api, wallet_id) == [attempt_id, attempt_id]  # unfinished + again
    assert not await _charge(api, wallet_id, DOLLAR, "after-rebuild")

    api.clock.advance(LEASE_MS)
    await worker.run_once()  # runs it twice: one charge, one grant
    assert [c.idempotency_key for c in payments.succeeded] == [attempt_id]
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]
    assert await _attempts(api, wallet_id) == [("succeeded", "")]
    assert await api.available(wallet_id) == 59 * DOLLAR
    assert await _pending(api, wallet_id) == ""
    assert await _queued(api, wallet_id) == []


class _InFlight(SandboxPaymentProvider):
    """Charges, then holds the first caller (a worker in flight between the charge and the
    grant) until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.charged = asyncio.Event()
        self.release = asyncio.Event()

    async def charge(
        self, *, idempotency_key: str, payment_method_id: str, asset_code: str, amount: int
    ) -> PaymentResult:
        result = await super().charge(
            idempotency_key=idempotency_key,
            payment_method_id=payment_method_id,
            asset_code=asset_code,
            amount=amount,
        )
        if not self.charged.is_set():
            self.charged.set()
            await self.release.wait()
        return result


async def test_the_run_in_flight_and_the_requeued_run_credit_once(redis_api: WalletApi) -> None:
    api = redis_api
    wallet_id, attempt_id = await _crossing(api)
    payments = _InFlight()
    first = AutoTopUpWorker(api.pool, api.backend, payments, api.clock, consumer="first")
    in_flight = asyncio.create_task(first.run_once())
    await asyncio.wait_for(payments.charged.wait(), 10)  # recorded and charged, no grant yet

    await api.drain_ledger()
    await api.redis.flushdb()
    assert await _rebuild(api) == [wallet_id]
    assert await _pending(api, wallet_id) == attempt_id
    spends = [_charge(api, wallet_id, DOLLAR, f"after-rebuild-{i}") for i in range(10)]
    assert not any(await asyncio.gather(*spends))  # concurrent spends: none starts one

    # The run that started before the loss and the re-queued one complete side by side.
    second = AutoTopUpWorker(api.pool, api.backend, payments, api.clock, consumer="second")
    payments.release.set()
    await asyncio.gather(in_flight, second.run_once())
    await first.run_once()
    await second.run_once()

    assert [c.idempotency_key for c in payments.succeeded] == [attempt_id]
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]
    assert await _attempts(api, wallet_id) == [("succeeded", "")]
    assert await api.available(wallet_id) == 50 * DOLLAR
    assert await _pending(api, wallet_id) == ""
    assert await _queued(api, wallet_id) == []


async def test_an_attempt_lost_before_it_was_recorded_is_void_and_started_once_anew(
    redis_api: WalletApi,
) -> None:
    api = redis_api
    wallet_id, lost = await _crossing(api)
    await api.drain_ledger()
    await api.backend.drop_hot_state(wallet_id)  # the wallet's keys; the streams stay
    assert await _queued(api, wallet_id) == [lost]
    assert await _rebuild(api) == [wallet_id]
    assert await _pending(api, wallet_id) is None  # Postgres never heard of it

    # The worker's look at the wallet (the rule is due) starts a new attempt; the lost one,
    # still queued, is void: it leaves the queue without reaching the payment provider.
    await api.run_top_ups()
    (charged,) = api.payments.charges
    assert charged != lost
    assert [c.idempotency_key for c in api.payments.succeeded] == [charged]
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]
    rows = await api.pool.fetch(
        "SELECT attempt_id, state FROM auto_topup_attempts WHERE wallet_id = $1", wallet_id
    )
    assert [(r["attempt_id"], r["state"]) for r in rows] == [(charged, "succeeded")]
    assert await api.available(wallet_id) == 60 * DOLLAR
    assert await _queued(api, wallet_id) == []
    assert await _pending(api, wallet_id) == ""


async def test_a_worker_holding_an_unrecorded_attempt_across_the_loss_never_charges_it(
    redis_api: WalletApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = redis_api
    wallet_id, lost = await _crossing(api)
    # A worker took the attempt from the stream and stalled before recording it.
    held = await api.backend.take_top_ups("stalled", api.clock.now, 100, LEASE_MS)
    assert [i.attempt_id for i in held if isinstance(i, TopUpAttempt)] == [lost]

    await api.drain_ledger()
    await api.redis.flushdb()
    assert await _rebuild(api) == [wallet_id]
    assert await _pending(api, wallet_id) is None

    take = api.backend.take_top_ups
    calls = 0

    async def resume(
        consumer: str, now_ms: int, limit: int, lease_ms: int
    ) -> list[TopUpAttempt | WalletEvent]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the stalled worker goes on with what it holds
            return list(held)
        return list(await take(consumer, now_ms, limit, lease_ms))

    monkeypatch.setattr(api.backend, "take_top_ups", resume)
    stalled = AutoTopUpWorker(api.pool, api.backend, api.payments, api.clock, consumer="stalled")
    await stalled.run_once()  # void: not recorded, not charged (the rule started a new one)
    assert lost not in api.payments.charges
    await stalled.run_once()

    (charged,) = api.payments.charges
    assert charged != lost
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]
    assert await _attempts(api, wallet_id) == [("succeeded", "")]
    assert await api.available(wallet_id) == 60 * DOLLAR


async def test_an_attempt_whose_grant_reached_the_ledger_is_not_pending_again(
    redis_api: WalletApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = redis_api
    wallet_id, attempt_id = await _crossing(api)
    paid = top_up_store.attempt_paid

    async def died(*args: object) -> None:
        raise ConnectionError("worker died between the grant and its row")

    monkeypatch.setattr(top_up_store, "attempt_paid", died)
    await api.run_top_ups()  # charged and credited; the row still says pending
    monkeypatch.setattr(top_up_store, "attempt_paid", paid)
    assert await _attempts(api, wallet_id) == [("pending", "")]
    assert await api.available(wallet_id) == 60 * DOLLAR

    await api.drain_ledger()
    await api.redis.flushdb()
    assert await _rebuild(api) == [wallet_id]
    # Restoring it would leave it pending for ever (its grant only replays): it is marked
    # succeeded, with the grant the ledger holds.
    assert await _pending(api, wallet_id) is None
    assert await _attempts(api, wallet_id) == [("succeeded", "")]
    grant_id = await _grant_of_attempt(api, attempt_id)
    grants = await api.stub.ListGrants(wallet_pb2.ListGrantsRequest(wallet=selector(wallet_id)))
    assert [g.amount.amount for g in grants.grants if g.grant_id == grant_id] == [20 * DOLLAR]
    assert await api.available(wallet_id) == 60 * DOLLAR

    # Nothing is stuck: the next crossing starts the next attempt.
    assert await _charge(api, wallet_id, 30 * DOLLAR, "cross-again")
    await api.run_top_ups()
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR, 20 * DOLLAR]
    assert len(api.payments.succeeded) == 2
    assert await api.available(wallet_id) == 50 * DOLLAR


async def test_rebuild_help_no_longer_warns_about_lost_attempts() -> None:
    code, output = await run_obol(os.environ, "rebuild", "--help")
    assert code == 0, output
    assert "is not restored" not in output
    assert "pending again" in output

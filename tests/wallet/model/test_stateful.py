"""Hypothesis drives random sequences of top-ups, grants, authorizations, captures, voids,
expiry (a controllable clock) and idempotent repeats against each backend and the model;
after every step the backend's balance and grants equal the model's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from obol_core.ids import new_id, new_ulid
from obol_core.postgres import apply_migrations, create_pool
from obol_core.redis import RedisClient, create_redis
from obol_wallet.backend import WalletBackend
from obol_wallet.errors import (
    CaptureExceedsHold,
    HoldAlreadyCaptured,
    HoldExpired,
    HoldVoided,
    InsufficientFunds,
    UnknownHold,
)
from obol_wallet.model import (
    AuthorizeRequest,
    CaptureRequest,
    GrantKind,
    GrantRequest,
    Idempotency,
    VoidRequest,
)
from obol_wallet.partitions import grant_id_for, hold_id_for, partition_of
from obol_wallet.pg_backend import PostgresBackend
from obol_wallet.redis_backend import RedisBackend
from obol_wallet.schema import MIGRATIONS_DIR, SCHEMA

from ..grpc.harness import private_redis_url
from .wallet_model import NEVER, ModelGrant, ModelHold, WalletModel

PARTITIONS = 8
START_MS = 1_800_000_000_000
amounts = st.integers(min_value=1, max_value=10**10)


class Harness:
    """The backend under test, run from Hypothesis' synchronous rules on one event loop."""

    def __init__(self, backend_name: str, database_url: str, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.backend_name = backend_name
        self.pool: asyncpg.Pool[asyncpg.Record] = self.run(
            create_pool(database_url, search_path=SCHEMA, max_size=4)
        )
        self.run(apply_migrations(self.pool, schema=SCHEMA, migrations=MIGRATIONS_DIR))
        self.run(
            self.pool.execute(
                "INSERT INTO assets (asset_code, kind, decimals) VALUES ('USD', 'currency', 9)"
            )
        )
        self.redis: RedisClient = create_redis(private_redis_url(redis_url))
        self.backend: WalletBackend = (
            PostgresBackend(self.pool)
            if backend_name == "postgres"
            else RedisBackend(self.redis, partitions=PARTITIONS)
        )

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    def new_wallet(self, now: int) -> str:
        customer_id, wallet_id = new_id("cus"), new_id("wal")
        self.run(
            self.pool.execute(
                "INSERT INTO customers (customer_id, external_id) VALUES ($1, $1)", customer_id
            )
        )
        self.run(
            self.pool.execute(
                """INSERT INTO wallets (wallet_id, customer_id, asset_code, partition)
                   VALUES ($1, $2, 'USD', $3)""",
                wallet_id,
                customer_id,
                partition_of(wallet_id, PARTITIONS),
            )
        )
        self.run(self.backend.open_wallet(wallet_id, "USD", 0, now))
        return wallet_id

    def close(self) -> None:
        self.run(self.pool.close())
        self.run(self.redis.aclose())
        self.loop.close()


def _idem() -> Idempotency:
    rid = new_ulid()
    return Idempotency(request_id=rid, request_hash=rid * 2)


def machine_for(harness: Harness) -> type[RuleBasedStateMachine]:
    class WalletMachine(RuleBasedStateMachine):
        holds = Bundle("holds")

        def __init__(self) -> None:
            super().__init__()
            self.model = WalletModel(now=START_MS)
            self.wallet_id = harness.new_wallet(self.model.now)
            self.last: tuple[Callable[[], Coroutine[Any, Any, Any]], Any] | None = None

        def _apply(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
            result = harness.run(make())
            self.last = (make, result)
            return result

        @rule(
            amount=amounts,
            priority=st.sampled_from([10, 100]),
            lifetime=st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
            purchased=st.booleans(),
        )
        def grant(self, amount: int, priority: int, lifetime: int | None, purchased: bool) -> None:
            self.model.settle()
            expires = NEVER if lifetime is None else self.model.now + lifetime
            grant_id = grant_id_for(self.wallet_id, new_ulid())
            request = GrantRequest(
                idem=_idem(),
                wallet_id=self.wallet_id,
                grant_id=grant_id,
                entry_id=new_id("txn"),
                kind=GrantKind.PURCHASED if purchased else GrantKind.PROMOTIONAL,
                amount=amount,
                priority=priority,
                effective_ms=self.model.now,
                expires_ms=expires,
                now_ms=self.model.now,
            )
            self._apply(lambda: harness.backend.grant(request))
            self.model.add_grant(ModelGrant(grant_id, amount, priority, expires, 0))

        @rule(target=holds, amount=amounts, ttl=st.integers(min_value=1, max_value=10**6))
        def authorize(self, amount: int, ttl: int) -> str:
            self.model.settle()
            hold_id = hold_id_for(self.wallet_id, new_ulid())
            request = AuthorizeRequest(
                idem=_idem(),
                wallet_id=self.wallet_id,
                hold_id=hold_id,
                entry_id=new_id("txn"),
                amount=amount,
                ttl_ms=ttl,
                now_ms=self.model.now,
            )
            if self.model.available >= amount:
                self._apply(lambda: harness.backend.authorize(request))
                self.model.holds[hold_id] = ModelHold(hold_id, amount, self.model.now + ttl)
            else:
                with pytest.raises(InsufficientFunds):
                    harness.run(harness.backend.authorize(request))
            return hold_id

        @rule(
            hold_id=consumes(holds),
            share=st.integers(min_value=0, max_value=200),
            allow_over=st.booleans(),
        )
        def capture(self, hold_id: str, share: int, allow_over: bool) -> None:
            self.model.settle()
            hold = self.model.holds.get(hold_id)
            amount = 0 if hold is None else hold.amount * share // 100
            request = CaptureRequest(
                idem=_idem(),
                wallet_id=self.wallet_id,
                hold_id=hold_id,
                entry_id=new_id("txn"),
                amount=amount,
                allow_overcapture=allow_over,
                now_ms=self.model.now,
            )
            expected = self._refusal(hold)
            if expected is None and hold is not None:
                if amount > hold.amount and not allow_over:
                    expected = CaptureExceedsHold
                elif self.model.available + hold.amount < amount:
                    expected = InsufficientFunds
            if expected is not None:
                with pytest.raises(expected):
                    harness.run(harness.backend.capture(request))
                return
            assert hold is not None
            self._apply(lambda: harness.backend.capture(request))
            hold.state = "captured"
            self.model.draw(amount)

        @rule(hold_id=consumes(holds))
        def void(self, hold_id: str) -> None:
            self.model.settle()
            hold = self.model.holds.get(hold_id)
            request = VoidRequest(
                idem=_idem(),
                wallet_id=self.wallet_id,
                hold_id=hold_id,
                entry_id=new_id("txn"),
                now_ms=self.model.now,
            )
            expected = self._refusal(hold)
            if expected is not None:
                with pytest.raises(expected):
                    harness.run(harness.backend.void(request))
                return
            assert hold is not None
            self._apply(lambda: harness.backend.void(request))
            hold.state = "voided"

        @rule(ms=st.integers(min_value=1, max_value=2 * 10**6))
        def advance(self, ms: int) -> None:
            self.model.now += ms

        @rule()
        def repeat_last_request(self) -> None:
            """The same request again: the first result, and nothing changes."""
            if self.last is None:
                return
            make, first = self.last
            again = harness.run(make())
            assert again.replayed
            assert again.entry_ids == first.entry_ids

        def _refusal(self, hold: ModelHold | None) -> type[Exception] | None:
            if hold is None:
                return UnknownHold  # its authorization was refused: no such hold
            return {
                "expired": HoldExpired,
                "captured": HoldAlreadyCaptured,
                "voided": HoldVoided,
            }.get(hold.state)

        @invariant()
        def balance_matches_the_model(self) -> None:
            self.model.settle()
            balance = harness.run(harness.backend.balance(self.wallet_id, self.model.now))
            assert balance.available == self.model.available
            assert balance.held == self.model.held
            if not self.model.expired_under_holds:
                assert balance.available >= 0
            grants = harness.run(harness.backend.grants(self.wallet_id, self.model.now))
            live = {
                g.grant_id: g.remaining
                for g in grants
                if g.remaining and g.state(self.model.now).value == "active"
            }
            assert live == self.model.remaining_by_grant()

    return WalletMachine


@pytest.mark.parametrize("backend_name", ["redis", "postgres"])
def test_backend_agrees_with_the_model(
    backend_name: str, fresh_database: str, redis_url: str
) -> None:
    harness = Harness(backend_name, fresh_database, redis_url)
    try:
        run_state_machine_as_test(
            machine_for(harness),
            settings=settings(
                max_examples=50,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        harness.close()

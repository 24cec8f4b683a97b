"""Auto top-up rules: the domain side of SetAutoTopUpRule, GetAutoTopUpRule and
DeleteAutoTopUpRule (docs/wallet.md "Auto top-up").

Postgres holds the rule (top_up_store.py, the system of record). Once a change is
committed, the backend's hot state is made to follow it (`mirror`, ordered by the rule's
version); the service mirrors again when a request is replayed, so a mirror lost to a
crash between the commit and the mirror is made by the client's retry.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from obol_core.errors import FieldViolation
from obol_core.money import Money, check_amount_range
from obol_core.postgres import Queryable

from . import top_up_store
from .backend import WalletBackend
from .clock import Clock
from .errors import AssetMismatch, ResourceNotFound
from .model import DEFAULT_MAX_FAILURES, TopUpRule
from .top_up_store import RuleSpec, TopUpHistory
from .wallets import WalletRecord


@dataclass(frozen=True)
class RuleView:
    """A rule with what its status shows."""

    rule: TopUpRule
    history: TopUpHistory
    asset_code: str


def _not_found(wallet_id: str) -> ResourceNotFound:
    return ResourceNotFound(
        f"wallet {wallet_id} has no auto top-up rule",
        metadata={"resource_type": "auto_top_up_rule", "wallet_id": wallet_id},
    )


def _check_money(record: WalletRecord, value: Money, field: str) -> int:
    if value.asset_code != record.asset_code:
        description = f"wallet {record.wallet_id} holds {record.asset_code}, not {value.asset_code}"
        raise AssetMismatch(
            f"{field}.asset_code: {description}",
            field_violations=[FieldViolation(f"{field}.asset_code", description)],
            metadata={
                "field": f"{field}.asset_code",
                "asset_code": value.asset_code,
                "expected_asset_code": record.asset_code,
            },
        )
    return check_amount_range(value.amount, f"{field}.amount")


def rule_spec(
    record: WalletRecord,
    *,
    threshold: Money,
    amount: Money | None,
    top_up_to: Money | None,
    payment_method_id: str,
    max_failures: int,
    enabled: bool,
) -> RuleSpec:
    """A rule for the wallet, its amounts checked (in the wallet's asset, in range);
    exactly one of `amount` and `top_up_to`. `max_failures` 0 means the default."""
    return RuleSpec(
        threshold=_check_money(record, threshold, "threshold"),
        amount=0 if amount is None else _check_money(record, amount, "amount"),
        top_up_to=0 if top_up_to is None else _check_money(record, top_up_to, "top_up_to"),
        payment_method_id=payment_method_id,
        max_failures=max_failures or DEFAULT_MAX_FAILURES,
        enabled=enabled,
    )


class TopUpRules:
    def __init__(
        self, pool: asyncpg.Pool[asyncpg.Record], backend: WalletBackend, clock: Clock
    ) -> None:
        self._pool = pool
        self._backend = backend
        self._clock = clock

    async def put(self, conn: Queryable, record: WalletRecord, spec: RuleSpec) -> RuleView:
        """Create or replace the wallet's rule (in the caller's transaction)."""
        rule = await top_up_store.put_rule(conn, record.wallet_id, spec, self._clock.now_ms())
        history = await top_up_store.history(conn, record.wallet_id)
        return RuleView(rule, history, record.asset_code)

    async def get(self, record: WalletRecord) -> RuleView:
        async with self._pool.acquire() as conn:
            rule = await top_up_store.get_rule(conn, record.wallet_id)
            if rule is None or rule.deleted:
                raise _not_found(record.wallet_id)
            history = await top_up_store.history(conn, record.wallet_id)
        return RuleView(rule, history, record.asset_code)

    async def delete(self, conn: Queryable, wallet_id: str) -> None:
        """Delete the wallet's rule (in the caller's transaction); an attempt in flight
        completes."""
        if await top_up_store.delete_rule(conn, wallet_id, self._clock.now_ms()) is None:
            raise _not_found(wallet_id)

    async def mirror(self, wallet_id: str) -> None:
        """Make the backend's hot state follow the stored rule (a no-op when it does)."""
        async with self._pool.acquire() as conn:
            rule = await top_up_store.get_rule(conn, wallet_id)
        if rule is not None:
            await self._backend.mirror_top_up_rule(rule)

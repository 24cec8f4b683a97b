"""WalletCore: the wallet's domain operations, between the gRPC edge and a backend.

It resolves wallets, checks assets and amounts, mints ids (entries, grants, holds) and
hands each money movement to the backend as one atomic step. It knows nothing of gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from obol_core.errors import FieldViolation, ObolError
from obol_core.ids import new_id, new_ulid
from obol_core.money import check_amount_range
from obol_core.postgres import Queryable

from . import wallets
from .backend import BatchingBackend, WalletBackend
from .clock import Clock
from .errors import AssetMismatch, ResourceNotFound, UnknownHold
from .model import (
    DEFAULT_PRIORITY,
    NEVER_EXPIRES,
    AuthorizeRequest,
    AuthorizeResult,
    Balance,
    CaptureRequest,
    CaptureResult,
    ChargeRequest,
    CostRecord,
    DebitRequest,
    DebitResult,
    ExtendHoldRequest,
    ExtendHoldResult,
    Grant,
    GrantKind,
    GrantRequest,
    GrantResult,
    Hold,
    Idempotency,
    MutationResult,
    RefundRequest,
    SettingsRequest,
    VoidRequest,
    VoidResult,
)
from .partitions import grant_id_for, hold_id_for, partition_of, wallet_of_grant, wallet_of_hold
from .wallets import WalletRecord, WalletSelector


@dataclass(frozen=True)
class GrantSpec:
    kind: GrantKind
    amount: int
    priority: int = DEFAULT_PRIORITY
    effective_ms: int | None = None  # None: now
    expires_ms: int = NEVER_EXPIRES
    memo: Mapping[str, str] | None = None


@dataclass(frozen=True)
class AuthorizeItem:
    idem: Idempotency
    selector: WalletSelector
    asset_code: str
    amount: int
    ttl_ms: int | None
    memo: Mapping[str, str] | None = None


@dataclass(frozen=True)
class CaptureItem:
    idem: Idempotency
    hold_id: str
    asset_code: str
    amount: int
    allow_overcapture: bool
    cost: CostRecord | None
    memo: Mapping[str, str] | None = None


@dataclass(frozen=True)
class DebitItem:
    idem: Idempotency
    hold_id: str
    asset_code: str
    amount: int
    cost: CostRecord | None


@dataclass(frozen=True)
class ExtendHoldItem:
    idem: Idempotency
    hold_id: str
    ttl_ms: int
    increase_by: int  # 0: reserve nothing more
    asset_code: str  # of `increase_by` ("" when none)


@dataclass(frozen=True)
class ChargeItem:
    idem: Idempotency
    selector: WalletSelector
    asset_code: str
    amount: int
    cost: CostRecord | None
    memo: Mapping[str, str] | None = None


# How many single calls a backend without pipelining runs at once for one batch.
_BATCH_CONCURRENCY = 32

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class WalletView:
    record: WalletRecord
    balance: Balance
    grants: Sequence[Grant]


def _memo(values: Mapping[str, str] | None) -> Mapping[str, str]:
    return {k: v for k, v in (values or {}).items() if v}


class WalletCore:
    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        backend: WalletBackend,
        clock: Clock,
        *,
        partitions: int,
        default_hold_ttl_ms: int,
    ) -> None:
        self.pool = pool
        self.directory = wallets.WalletDirectory(pool)
        self.backend = backend
        self.clock = clock
        self._partitions = partitions
        self._default_hold_ttl_ms = default_hold_ttl_ms

    # ---- wallets ----

    async def insert_wallet(
        self,
        conn: Queryable,
        customer_id: str,
        asset_code: str,
        overdraft_limit: int,
    ) -> WalletRecord:
        """The wallet's row, inside the caller's transaction; `open_wallet` after commit."""
        check_amount_range(overdraft_limit, "overdraft_limit.amount")
        wallet_id = new_id("wal")
        return await wallets.insert_wallet(
            conn,
            wallet_id=wallet_id,
            customer_id=customer_id,
            asset_code=asset_code,
            partition=partition_of(wallet_id, self._partitions),
            overdraft_limit=overdraft_limit,
        )

    async def open_wallet(self, wallet_id: str, overdraft_limit: int) -> WalletRecord:
        """Create the wallet's hot state (idempotent: an open wallet is left as it is)."""
        record = await self.directory.get(wallet_id)
        await self.backend.open_wallet(
            wallet_id, record.asset_code, overdraft_limit, self.clock.now_ms()
        )
        return record

    async def resolve(self, selector: WalletSelector) -> WalletRecord:
        return await self.directory.find(selector)

    async def view(self, selector: WalletSelector) -> WalletView:
        record = await self.resolve(selector)
        now = self.clock.now_ms()
        balance = await self.backend.balance(record.wallet_id, now)
        grants = await self.backend.grants(record.wallet_id, now)
        return WalletView(record, balance, grants)

    async def update_settings(
        self,
        idem: Idempotency,
        wallet_id: str,
        *,
        frozen: bool | None = None,
        overdraft_limit: int | None = None,
    ) -> tuple[WalletRecord, MutationResult]:
        record = await self.directory.get(wallet_id)
        if overdraft_limit is not None:
            check_amount_range(overdraft_limit, "overdraft_limit.amount")
        result = await self.backend.update_settings(
            SettingsRequest(
                idem=idem,
                wallet_id=record.wallet_id,
                entry_id=new_id("txn"),
                now_ms=self.clock.now_ms(),
                frozen=frozen,
                overdraft_limit=overdraft_limit,
            )
        )
        return record, result

    # ---- grants ----

    async def grant(
        self, idem: Idempotency, selector: WalletSelector, asset_code: str, spec: GrantSpec
    ) -> tuple[WalletRecord, GrantResult]:
        record = await self.resolve(selector)
        _check_asset(record, asset_code, "amount.asset_code")
        check_amount_range(spec.amount, "amount.amount")
        now = self.clock.now_ms()
        result = await self.backend.grant(
            GrantRequest(
                idem=idem,
                wallet_id=record.wallet_id,
                grant_id=grant_id_for(record.wallet_id, new_ulid()),
                entry_id=new_id("txn"),
                kind=spec.kind,
                amount=spec.amount,
                priority=spec.priority,
                effective_ms=now if spec.effective_ms is None else spec.effective_ms,
                expires_ms=spec.expires_ms,
                now_ms=now,
                memo=_memo(spec.memo),
            )
        )
        return record, result

    async def refund(
        self, idem: Idempotency, grant_id: str, asset_code: str, amount: int
    ) -> MutationResult:
        wallet_id = wallet_of_grant(grant_id)
        if wallet_id is None:
            raise ResourceNotFound(
                f"no grant {grant_id!r}", metadata={"resource_type": "grant", "grant_id": grant_id}
            )
        record = await self.directory.get(wallet_id)
        _check_asset(record, asset_code, "amount.asset_code")
        check_amount_range(amount, "amount.amount")
        return await self.backend.refund(
            RefundRequest(
                idem=idem,
                wallet_id=record.wallet_id,
                grant_id=grant_id,
                entry_id=new_id("txn"),
                amount=amount,
                now_ms=self.clock.now_ms(),
            )
        )

    # ---- holds ----

    async def authorize(self, item: AuthorizeItem) -> tuple[WalletRecord, AuthorizeResult]:
        record, request = await self._authorize_request(item)
        return record, await self.backend.authorize(request)

    async def capture(self, item: CaptureItem) -> tuple[WalletRecord, CaptureResult]:
        record, request = await self._capture_request(item)
        return record, await self.backend.capture(request)

    async def void(self, idem: Idempotency, hold_id: str) -> VoidResult:
        return await self.backend.void(
            VoidRequest(
                idem=idem,
                wallet_id=_hold_wallet(hold_id),
                hold_id=hold_id,
                entry_id=new_id("txn"),
                now_ms=self.clock.now_ms(),
            )
        )

    async def charge(self, item: ChargeItem) -> tuple[WalletRecord, CaptureResult]:
        record, request = await self._charge_request(item)
        return record, await self.backend.charge(request)

    async def debit(self, item: DebitItem) -> tuple[WalletRecord, DebitResult]:
        wallet_id = _hold_wallet(item.hold_id)
        record = await self.directory.get(wallet_id)
        _check_asset(record, item.asset_code, "amount.asset_code")
        check_amount_range(item.amount, "amount.amount")
        result = await self.backend.debit(
            DebitRequest(
                idem=item.idem,
                wallet_id=wallet_id,
                hold_id=item.hold_id,
                entry_id=new_id("txn"),
                amount=item.amount,
                now_ms=self.clock.now_ms(),
                cost=item.cost,
            )
        )
        return record, result

    async def extend_hold(self, item: ExtendHoldItem) -> tuple[WalletRecord, ExtendHoldResult]:
        wallet_id = _hold_wallet(item.hold_id)
        record = await self.directory.get(wallet_id)
        if item.increase_by:
            _check_asset(record, item.asset_code, "increase_by.asset_code")
            check_amount_range(item.increase_by, "increase_by.amount")
        result = await self.backend.extend_hold(
            ExtendHoldRequest(
                idem=item.idem,
                wallet_id=wallet_id,
                hold_id=item.hold_id,
                entry_id=new_id("txn"),
                ttl_ms=item.ttl_ms,
                increase_by=item.increase_by,
                now_ms=self.clock.now_ms(),
            )
        )
        return record, result

    # ---- batches: each item resolves on its own; errors are results, not raised ----

    async def authorize_batch(
        self, items: Sequence[AuthorizeItem]
    ) -> list[tuple[WalletRecord | None, AuthorizeResult | ObolError]]:
        prepared = [await self._prepare(self._authorize_request, item) for item in items]
        requests = [(r, req) for r, req in prepared if not isinstance(req, ObolError)]
        if isinstance(self.backend, BatchingBackend):
            done = await self.backend.authorize_many([req for _, req in requests])
        else:
            done = await _bounded(self.backend.authorize, [req for _, req in requests])
        return _merge(prepared, done)

    async def capture_batch(
        self, items: Sequence[CaptureItem]
    ) -> list[tuple[WalletRecord | None, CaptureResult | ObolError]]:
        prepared = [await self._prepare(self._capture_request, item) for item in items]
        requests = [(r, req) for r, req in prepared if not isinstance(req, ObolError)]
        if isinstance(self.backend, BatchingBackend):
            done = await self.backend.capture_many([req for _, req in requests])
        else:
            done = await _bounded(self.backend.capture, [req for _, req in requests])
        return _merge(prepared, done)

    async def charge_batch(
        self, items: Sequence[ChargeItem]
    ) -> list[tuple[WalletRecord | None, CaptureResult | ObolError]]:
        prepared = [await self._prepare(self._charge_request, item) for item in items]
        requests = [(r, req) for r, req in prepared if not isinstance(req, ObolError)]
        if isinstance(self.backend, BatchingBackend):
            done = await self.backend.charge_many([req for _, req in requests])
        else:
            done = await _bounded(self.backend.charge, [req for _, req in requests])
        return _merge(prepared, done)

    async def _prepare(
        self,
        build: Callable[[ItemT], Awaitable[tuple[WalletRecord, RequestT]]],
        item: ItemT,
    ) -> tuple[WalletRecord | None, RequestT | ObolError]:
        try:
            return await build(item)
        except ObolError as err:
            return None, err

    async def _authorize_request(
        self, item: AuthorizeItem
    ) -> tuple[WalletRecord, AuthorizeRequest]:
        record = await self.resolve(item.selector)
        _check_asset(record, item.asset_code, "amount.asset_code")
        check_amount_range(item.amount, "amount.amount")
        return record, AuthorizeRequest(
            idem=item.idem,
            wallet_id=record.wallet_id,
            hold_id=hold_id_for(record.wallet_id, new_ulid()),
            entry_id=new_id("txn"),
            amount=item.amount,
            ttl_ms=self._default_hold_ttl_ms if item.ttl_ms is None else item.ttl_ms,
            now_ms=self.clock.now_ms(),
            memo=_memo(item.memo),
        )

    async def _capture_request(self, item: CaptureItem) -> tuple[WalletRecord, CaptureRequest]:
        wallet_id = _hold_wallet(item.hold_id)
        record = await self.directory.get(wallet_id)
        _check_asset(record, item.asset_code, "amount.asset_code")
        check_amount_range(item.amount, "amount.amount")
        return record, CaptureRequest(
            idem=item.idem,
            wallet_id=wallet_id,
            hold_id=item.hold_id,
            entry_id=new_id("txn"),
            amount=item.amount,
            allow_overcapture=item.allow_overcapture,
            now_ms=self.clock.now_ms(),
            cost=item.cost,
            memo=_memo(item.memo),
        )

    async def _charge_request(self, item: ChargeItem) -> tuple[WalletRecord, ChargeRequest]:
        record = await self.resolve(item.selector)
        _check_asset(record, item.asset_code, "amount.asset_code")
        check_amount_range(item.amount, "amount.amount")
        return record, ChargeRequest(
            idem=item.idem,
            wallet_id=record.wallet_id,
            entry_id=new_id("txn"),
            amount=item.amount,
            now_ms=self.clock.now_ms(),
            cost=item.cost,
            memo=_memo(item.memo),
        )

    async def hold(self, hold_id: str) -> Hold:
        return await self.backend.hold(_hold_wallet(hold_id), hold_id, self.clock.now_ms())


def _check_asset(record: WalletRecord, asset_code: str, field: str) -> None:
    if asset_code != record.asset_code:
        description = f"wallet {record.wallet_id} holds {record.asset_code}, not {asset_code}"
        raise AssetMismatch(
            f"{field}: {description}",
            field_violations=[FieldViolation(field, description)],
            metadata={
                "field": field,
                "asset_code": asset_code,
                "expected_asset_code": record.asset_code,
            },
        )


def _hold_wallet(hold_id: str) -> str:
    wallet_id = wallet_of_hold(hold_id)
    if wallet_id is None:
        raise UnknownHold(f"no hold {hold_id!r}", metadata={"hold_id": hold_id})
    return wallet_id


ItemT = TypeVar("ItemT")


async def _bounded(
    call: Callable[[RequestT], Awaitable[ResultT]], requests: Sequence[RequestT]
) -> list[ResultT | ObolError]:
    """Single calls, at most _BATCH_CONCURRENCY at a time, errors as results."""
    gate = asyncio.Semaphore(_BATCH_CONCURRENCY)

    async def one(request: RequestT) -> ResultT | ObolError:
        async with gate:
            try:
                return await call(request)
            except ObolError as err:
                return err

    return list(await asyncio.gather(*(one(r) for r in requests)))


def _merge(
    prepared: Sequence[tuple[WalletRecord | None, object]],
    done: Sequence[ResultT | ObolError],
) -> list[tuple[WalletRecord | None, ResultT | ObolError]]:
    """Put the backend's results back among the items that failed before reaching it."""
    results = iter(done)
    merged: list[tuple[WalletRecord | None, ResultT | ObolError]] = []
    for record, request in prepared:
        if isinstance(request, ObolError):
            merged.append((record, request))
        else:
            merged.append((record, next(results)))
    return merged

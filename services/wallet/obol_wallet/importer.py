"""Customer import: the bulk upsert behind ImportCustomers, for migrating from another
billing system. It knows nothing of gRPC: rows arrive as the dataclasses below
(importer_convert.py makes them from protos, after the schema rules).

Each row is checked and applied on its own; a bad row is reported and the import goes on.

1. Checks: the external_id is not already in the file, every asset exists, one wallet per
   asset, grant external_ids are unique within their wallet, an overdraft limit is in its
   wallet's asset, an expiry is after the effective time.
2. Plan (reads only): create, update or leave the customer (`create_only`: an existing
   customer is an error); which wallets to create; which existing wallets get a new
   overdraft limit; which grants are new. A dry run stops here, so it reports exactly what
   a real run would do.
3. Apply: the customer and its new wallets' rows in one transaction; after it commits, the
   new wallets' hot state, then each overdraft change and each new grant as its own
   backend call. A row that fails while being applied may be partly applied (customer and
   wallets first, then grant by grant); running the import again completes it (unless a
   new wallet's hot state could not be created: that wallet needs `obol rebuild`).

A row is the customer's whole state: empty fields clear the stored ones. Grants are
deduplicated by external_id within their wallet across imports, not only within one: a
grant's request id comes from (customer external_id, asset, grant external_id), and is
claimed in `idempotency_keys` by a transaction that commits only after the backend applied
the grant (with that request id as the backend's own idempotency key). A claim that exists
means the grant exists: the same grant again is left unchanged, different content under
the same external_id is an error (IDEMPOTENCY_KEY_REUSED) and is also left unchanged.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field

import asyncpg

from obol_core.errors import ObolError
from obol_core.money import Money
from obol_core.postgres import Queryable

from . import assets, customers, wallets
from .core import GrantSpec, WalletCore
from .customers import Customer, NewCustomer
from .errors import UnknownAsset, UnknownCustomer, UnknownWallet, VersionConflict
from .model import NEVER_EXPIRES, GrantKind, Idempotency
from .wallets import WalletRecord, WalletSelector

_GRANT_METHOD = "ImportGrant"
_IMPORT_METHOD = "ImportCustomers"


# ---- rows and results ----


@dataclass(frozen=True)
class ImportOptions:
    request_id: str
    dry_run: bool = False
    create_only: bool = False


@dataclass(frozen=True)
class GrantLine:
    """An opening grant, in its wallet's asset."""

    external_id: str
    amount: int
    kind: GrantKind
    priority: int
    effective_ms: int | None  # None: when imported
    expires_ms: int  # NEVER_EXPIRES for none
    description: str
    request_hash: str  # sha256 hex of the grant as sent: same content, same hash


@dataclass(frozen=True)
class WalletLine:
    asset_code: str
    overdraft_limit: Money | None  # None keeps the current limit (0 for a new wallet)
    grants: Sequence[GrantLine] = ()


@dataclass(frozen=True)
class ImportRow:
    line_number: int
    customer: NewCustomer
    wallets: Sequence[WalletLine] = ()


@dataclass(frozen=True)
class RowError:
    line_number: int
    external_id: str
    field: str  # path within the row, e.g. "customer.email", "wallets[0].grants[1]"
    message: str
    reason: str  # an ErrorReason name, e.g. "VALIDATION_FAILED"


@dataclass(frozen=True)
class RejectedRow:
    """A row refused before conversion (schema rules); its errors are reported as they are."""

    line_number: int
    external_id: str
    errors: Sequence[RowError]


@dataclass
class ImportSummary:
    """Counts of rows (created + updated + unchanged + failed = received), of wallets and
    grants created (or that would be, in a dry run), and every error by line."""

    dry_run: bool
    rows_received: int = 0
    customers_created: int = 0
    customers_updated: int = 0
    customers_unchanged: int = 0
    rows_failed: int = 0
    wallets_created: int = 0
    grants_created: int = 0
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class ImportRecord:
    """The stored first result of an import request id."""

    request_hash: bytes
    result: bytes


def grant_request_id(customer_external_id: str, asset_code: str, grant_external_id: str) -> str:
    """The request id of an imported grant: the same for the same grant in every import."""
    key = "\x00".join((customer_external_id, asset_code, grant_external_id))
    return f"import-grant:{hashlib.sha256(key.encode()).hexdigest()}"


async def run_import(
    core: WalletCore,
    pool: asyncpg.Pool[asyncpg.Record],
    options: ImportOptions,
    rows: AsyncIterable[ImportRow | RejectedRow],
) -> ImportSummary:
    """Check, plan and (unless a dry run) apply every row; never raises for a bad row."""
    importer = _Importer(core, pool, options)
    async for row in rows:
        await importer.add(row)
    return importer.summary


# ---- the whole import's idempotency record ----


async def load_import_record(pool: Queryable, request_id: str) -> ImportRecord | None:
    row = await pool.fetchrow(
        "SELECT request_hash, response FROM idempotency_keys WHERE request_id = $1", request_id
    )
    return None if row is None else ImportRecord(row["request_hash"], row["response"])


async def save_import_record(
    pool: Queryable, request_id: str, record: ImportRecord
) -> ImportRecord:
    """Store the first result of `request_id`; if one is already there, return that one."""
    await pool.execute(
        """INSERT INTO idempotency_keys (request_id, method, request_hash, response)
           VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING""",
        request_id,
        _IMPORT_METHOD,
        record.request_hash,
        record.result,
    )
    stored = await load_import_record(pool, request_id)
    assert stored is not None
    return stored


# ---- one row: check, plan, apply ----


class _Change(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class _WalletPlan:
    index: int
    line: WalletLine
    record: WalletRecord | None  # None: to be created
    new_limit: int | None  # an existing wallet whose overdraft limit changes
    new_grants: Sequence[tuple[int, GrantLine]]  # (index in the wallet line, grant)


@dataclass(frozen=True)
class _RowPlan:
    existing: Customer | None
    change: _Change
    wallets: Sequence[_WalletPlan]


class _RowFailed(Exception):
    def __init__(self, field: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.reason = reason

    @classmethod
    def of(cls, field: str, err: ObolError) -> _RowFailed:
        return cls(field, err.message, err.reason)


class _Importer:
    def __init__(
        self, core: WalletCore, pool: asyncpg.Pool[asyncpg.Record], options: ImportOptions
    ) -> None:
        self._core = core
        self._pool = pool
        self._options = options
        self._assets: dict[str, bool] = {}  # asset code -> exists
        self._first_line: dict[str, int] = {}  # external_id -> line it first appeared on
        self.summary = ImportSummary(dry_run=options.dry_run)

    async def add(self, row: ImportRow | RejectedRow) -> None:
        self.summary.rows_received += 1
        if isinstance(row, RejectedRow):
            errors = list(row.errors)
            if row.external_id and (duplicate := self._duplicate(row.external_id, row)):
                errors.append(duplicate)
            self._fail(errors)
            return
        errors = await self._check(row)
        if errors:
            self._fail(errors)
            return
        try:
            plan = await self._plan(row)
            if self._options.dry_run:
                self._count(plan.change)
                self.summary.wallets_created += sum(w.record is None for w in plan.wallets)
                self.summary.grants_created += sum(len(w.new_grants) for w in plan.wallets)
            else:
                await self._apply(row, plan)
                self._count(plan.change)
        except _RowFailed as failed:
            self._fail([_error(row, failed.field, failed.message, failed.reason)])

    def _count(self, change: _Change) -> None:
        if change is _Change.CREATE:
            self.summary.customers_created += 1
        elif change is _Change.UPDATE:
            self.summary.customers_updated += 1
        else:
            self.summary.customers_unchanged += 1

    def _fail(self, errors: Sequence[RowError]) -> None:
        self.summary.rows_failed += 1
        self.summary.errors.extend(errors)

    def _duplicate(self, external_id: str, row: ImportRow | RejectedRow) -> RowError | None:
        first = self._first_line.get(external_id)
        if first is None:
            self._first_line[external_id] = row.line_number
            return None
        return RowError(
            row.line_number,
            external_id,
            "customer.external_id",
            f"external_id {external_id!r} is already in this import, on line {first}",
            "VALIDATION_FAILED",
        )

    async def _asset_exists(self, asset_code: str) -> bool:
        if asset_code not in self._assets:
            try:
                await assets.get_asset(self._pool, asset_code)
                self._assets[asset_code] = True
            except UnknownAsset:
                self._assets[asset_code] = False
        return self._assets[asset_code]

    async def _check(self, row: ImportRow) -> list[RowError]:
        errors: list[RowError] = []
        if duplicate := self._duplicate(row.customer.external_id, row):
            errors.append(duplicate)
        first_of_asset: dict[str, int] = {}
        for i, wallet in enumerate(row.wallets):
            path = f"wallets[{i}]"
            first = first_of_asset.setdefault(wallet.asset_code, i)
            if first != i:
                message = f"a second {wallet.asset_code} wallet (the first is wallets[{first}])"
                errors.append(_error(row, f"{path}.asset_code", message, "VALIDATION_FAILED"))
            elif not await self._asset_exists(wallet.asset_code):
                message = f"no asset {wallet.asset_code!r}"
                errors.append(_error(row, f"{path}.asset_code", message, "UNKNOWN_ASSET"))
            limit = wallet.overdraft_limit
            if limit is not None and limit.asset_code != wallet.asset_code:
                message = (
                    f"must be in the wallet's asset {wallet.asset_code}, not {limit.asset_code}"
                )
                field = f"{path}.overdraft_limit.asset_code"
                errors.append(_error(row, field, message, "ASSET_MISMATCH"))
            errors += _check_grants(row, path, wallet.grants)
        return errors

    async def _plan(self, row: ImportRow) -> _RowPlan:
        external_id = row.customer.external_id
        try:
            existing = await customers.get_customer_by_external_id(self._pool, external_id)
        except UnknownCustomer:
            existing = None
        if existing is None:
            change = _Change.CREATE
        elif self._options.create_only:
            raise _RowFailed(
                "customer.external_id",
                f"a customer with external_id {external_id!r} already exists (create_only)",
                "RESOURCE_ALREADY_EXISTS",
            )
        else:
            change = _Change.UNCHANGED if _same(existing, row.customer) else _Change.UPDATE
        plans = [
            await self._plan_wallet(row, existing, i, line) for i, line in enumerate(row.wallets)
        ]
        if change is _Change.UNCHANGED and any(p.new_limit is not None for p in plans):
            change = _Change.UPDATE
        return _RowPlan(existing, change, plans)

    async def _plan_wallet(
        self, row: ImportRow, customer: Customer | None, index: int, line: WalletLine
    ) -> _WalletPlan:
        path = f"wallets[{index}]"
        record: WalletRecord | None = None
        new_limit: int | None = None
        if customer is not None:
            selector = WalletSelector(customer_id=customer.customer_id, asset_code=line.asset_code)
            try:
                record = await wallets.find_wallet(self._pool, selector)
            except UnknownWallet:
                record = None
        if record is not None and line.overdraft_limit is not None:
            try:
                balance = await self._core.backend.balance(record.wallet_id, self._now())
            except ObolError as err:  # e.g. WALLET_NOT_HYDRATED
                raise _RowFailed.of(path, err) from err
            if balance.overdraft_limit != line.overdraft_limit.amount:
                new_limit = line.overdraft_limit.amount
        new_grants = [
            (j, grant)
            for j, grant in enumerate(line.grants)
            if await self._grant_is_new(row, line.asset_code, grant, f"{path}.grants[{j}]")
        ]
        return _WalletPlan(index, line, record, new_limit, new_grants)

    async def _grant_is_new(
        self, row: ImportRow, asset_code: str, grant: GrantLine, path: str
    ) -> bool:
        request_id = grant_request_id(row.customer.external_id, asset_code, grant.external_id)
        stored = await self._pool.fetchval(
            "SELECT request_hash FROM idempotency_keys WHERE request_id = $1", request_id
        )
        if stored is not None:
            if stored != bytes.fromhex(grant.request_hash):
                raise _grant_conflict(path, grant)
            return False
        if grant.expires_ms != NEVER_EXPIRES and grant.expires_ms <= self._now():
            raise _RowFailed(f"{path}.expire_time", "is in the past", "VALIDATION_FAILED")
        return True

    async def _apply(self, row: ImportRow, plan: _RowPlan) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            customer_id = await self._write_customer(conn, row.customer, plan.existing)
            created = {
                wallet.index: await self._insert_wallet(conn, customer_id, wallet)
                for wallet in plan.wallets
                if wallet.record is None
            }
        self.summary.wallets_created += len(created)
        for wallet in plan.wallets:  # after the commit: the backend reads the new rows
            if wallet.record is None:
                await self._open_wallet(created[wallet.index], wallet)
        for wallet in plan.wallets:
            record = wallet.record or created[wallet.index]
            path = f"wallets[{wallet.index}]"
            if wallet.new_limit is not None:
                await self._set_limit(record, wallet.new_limit, path)
            for j, grant in wallet.new_grants:
                if await self._grant(row, record, grant, f"{path}.grants[{j}]"):
                    self.summary.grants_created += 1

    async def _write_customer(
        self, conn: Queryable, new: NewCustomer, existing: Customer | None
    ) -> str:
        if existing is None:
            try:
                return (await customers.create_customer(conn, new)).customer_id
            except ObolError as err:  # created meanwhile by someone else
                raise _RowFailed.of("customer.external_id", err) from err
        if not _same(existing, new):
            await _update_customer(conn, existing, new)
        return existing.customer_id

    async def _insert_wallet(
        self, conn: Queryable, customer_id: str, wallet: _WalletPlan
    ) -> WalletRecord:
        try:
            return await self._core.insert_wallet(
                conn, customer_id, wallet.line.asset_code, _limit(wallet.line)
            )
        except ObolError as err:
            raise _RowFailed.of(f"wallets[{wallet.index}]", err) from err

    async def _open_wallet(self, record: WalletRecord, wallet: _WalletPlan) -> None:
        """The new wallet's hot state; an existing wallet is never opened again (a missing
        hot state is rebuilt from the ledger, never reset to empty)."""
        try:
            await self._core.open_wallet(record.wallet_id, _limit(wallet.line))
        except ObolError as err:
            raise _RowFailed.of(f"wallets[{wallet.index}]", err) from err

    async def _set_limit(self, record: WalletRecord, limit: int, path: str) -> None:
        key = f"{record.wallet_id}\x00{limit}".encode()
        idem = Idempotency(
            f"import:{self._options.request_id}:overdraft:{record.wallet_id}",
            hashlib.sha256(key).hexdigest(),
        )
        try:
            await self._core.update_settings(idem, record.wallet_id, overdraft_limit=limit)
        except ObolError as err:  # e.g. INSUFFICIENT_FUNDS when lowering it
            raise _RowFailed.of(f"{path}.overdraft_limit", err) from err

    async def _grant(
        self, row: ImportRow, record: WalletRecord, grant: GrantLine, path: str
    ) -> bool:
        """Apply one grant once; False if it was already there (a concurrent import)."""
        request_id = grant_request_id(
            row.customer.external_id, record.asset_code, grant.external_id
        )
        request_hash = bytes.fromhex(grant.request_hash)
        spec = GrantSpec(
            kind=grant.kind,
            amount=grant.amount,
            priority=grant.priority,
            effective_ms=grant.effective_ms,
            expires_ms=grant.expires_ms,
            memo={
                "external_id": grant.external_id,
                "description": grant.description,
                "import_request_id": self._options.request_id,
            },
        )
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetchval(
                """INSERT INTO idempotency_keys (request_id, method, request_hash, response)
                   VALUES ($1, $2, $3, ''::bytea)
                   ON CONFLICT (request_id) DO NOTHING
                   RETURNING true""",
                request_id,
                _GRANT_METHOD,
                request_hash,
            )
            if not claimed:
                stored = await conn.fetchval(
                    "SELECT request_hash FROM idempotency_keys WHERE request_id = $1", request_id
                )
                if stored != request_hash:
                    raise _grant_conflict(path, grant)
                return False
            try:
                await self._core.grant(
                    Idempotency(request_id, grant.request_hash),
                    WalletSelector(wallet_id=record.wallet_id),
                    record.asset_code,
                    spec,
                )
            except ObolError as err:
                raise _RowFailed.of(path, err) from err
        return True

    def _now(self) -> int:
        return self._core.clock.now_ms()


def _limit(line: WalletLine) -> int:
    return 0 if line.overdraft_limit is None else line.overdraft_limit.amount


def _error(row: ImportRow, field: str, message: str, reason: str) -> RowError:
    return RowError(row.line_number, row.customer.external_id, field, message, reason)


def _check_grants(row: ImportRow, path: str, grants: Sequence[GrantLine]) -> list[RowError]:
    errors: list[RowError] = []
    first_of_id: dict[str, int] = {}
    for j, grant in enumerate(grants):
        grant_path = f"{path}.grants[{j}]"
        first = first_of_id.setdefault(grant.external_id, j)
        if first != j:
            message = f"external_id {grant.external_id!r} is already used by {path}.grants[{first}]"
            errors.append(_error(row, f"{grant_path}.external_id", message, "VALIDATION_FAILED"))
        if (
            grant.expires_ms != NEVER_EXPIRES
            and grant.effective_ms is not None
            and grant.expires_ms <= grant.effective_ms
        ):
            message = "must be after effective_time"
            errors.append(_error(row, f"{grant_path}.expire_time", message, "VALIDATION_FAILED"))
    return errors


def _grant_conflict(path: str, grant: GrantLine) -> _RowFailed:
    return _RowFailed(
        f"{path}.external_id",
        f"grant {grant.external_id!r} was already imported with different content; "
        "it is left unchanged",
        "IDEMPOTENCY_KEY_REUSED",
    )


def _same(stored: Customer, new: NewCustomer) -> bool:
    return (
        stored.display_name == new.display_name
        and stored.email == new.email
        and stored.plan_id == new.plan_id
        and dict(stored.metadata) == dict(new.metadata)
    )


async def _update_customer(conn: Queryable, stored: Customer, new: NewCustomer) -> None:
    """Set every field of the row; refused if the customer changed since it was read."""
    try:
        await customers.update_customer(
            conn,
            stored.customer_id,
            new,
            frozenset({"display_name", "email", "plan_id", "metadata"}),
            expected_version=stored.version,
        )
    except VersionConflict as conflict:
        raise _RowFailed(
            "customer",
            "the customer changed while it was being imported; run the import again",
            "VERSION_CONFLICT",
        ) from conflict

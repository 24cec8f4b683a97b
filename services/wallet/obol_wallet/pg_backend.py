"""PostgresBackend: the "just use Postgres" wallet, the baseline `make bench` compares with.

Same semantics as the Redis backend (see backend.py and docs/wallet.md), one transaction
per operation:

1. `SELECT ... FOR UPDATE` on the wallet row: every change of a wallet is serialized
   there, so a check and its change can never interleave with another's.
2. The idempotency record `(wallet_id, request_id)` is read after the lock, so a
   concurrent duplicate waits for the first to commit and then replays its result.
3. Time is settled (pending grants activated, expired grants and holds closed through
   ledger entries) before the operation, in the same transaction.
4. The operation's checks and changes, then the ledger entries (hash-chained), the grant
   and hold rows, the wallet counters and the idempotency record, through ledger_store.
5. After a spend (authorize, capture, charge, debit): balance alerts and maybe an auto
   top-up attempt, from the wallet's `auto_topup_rules` row (top_up_store.py).

A refused operation raises and rolls everything back, settlement included (it is redone
by the next call). Counters mirror the Redis hash: `active` (sum of active grants'
remaining), `overdraft_used` (<= 0), `held`, and `available = active + overdraft_used -
held + overdraft_limit`, never below zero.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TypeVar

import asyncpg

from obol_core.errors import ValidationFailed
from obol_core.idempotency import IdempotencyKeyReused
from obol_core.ids import new_id
from obol_core.money import LUA_EXACT_MAX, check_amount_range
from obol_core.postgres import Queryable

from . import ledger_store, top_up_store
from .errors import (
    BalanceOutOfRange,
    CaptureExceedsHold,
    GrantNotRefundable,
    HoldAlreadyCaptured,
    HoldExpired,
    HoldVoided,
    InsufficientFunds,
    RefundExceedsRemaining,
    ResourceNotFound,
    UnknownHold,
    UnknownWallet,
    WalletFrozen,
)
from .ledger_queries import GRANT_COLUMNS, HOLD_COLUMNS, grant_record, hold_record
from .ledger_store import ChainHead, GrantRecord, HoldRecord, WalletRequest, WalletState
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
    Draw,
    EntryKind,
    ExtendHoldRequest,
    ExtendHoldResult,
    Grant,
    GrantKind,
    GrantRequest,
    GrantResult,
    Hold,
    HoldState,
    Idempotency,
    LedgerEntry,
    LedgerLine,
    MutationResult,
    RefundRequest,
    RequestRecord,
    SettingsRequest,
    TopUpAttempt,
    TopUpDisabledReason,
    TopUpFailure,
    TopUpRule,
    TopUpStatus,
    VoidRequest,
    VoidResult,
    WalletEvent,
    WalletEventKind,
    retry_delay_ms,
)
from .partitions import reversal_grant_id

R = TypeVar("R", bound=MutationResult)

_FUNDING_ACCOUNT = {
    GrantKind.PURCHASED: "topup_clearing",
    GrantKind.INCLUDED: "included",
    GrantKind.ROLLOVER: "included",
    GrantKind.PROMOTIONAL: "promotions",
    GrantKind.ADJUSTMENT: "adjustments",
}

# Drawdown order: priority, then earliest expiry (never = last), then oldest.
_DRAW_ORDER = (
    "priority, CASE WHEN expires_ms = 0 THEN 9223372036854775807 ELSE expires_ms END,"
    " created_ms, grant_id"
)
_DUE_GRANTS = """(pending AND effective_ms <= $2)
                 OR (NOT expired AND expires_ms > 0 AND expires_ms <= $2)"""
_DUE_HOLDS = "state = 'open' AND expires_ms <= $2"
_IS_DUE = f"""EXISTS (SELECT 1 FROM grants WHERE wallet_id = $1 AND ({_DUE_GRANTS}))
              OR EXISTS (SELECT 1 FROM holds WHERE wallet_id = $1 AND {_DUE_HOLDS})"""
# After the wallet's lock: the request's idempotency record (if any) and whether time has
# something to settle, in one round trip.
_REQUEST_AND_DUE = f"""SELECT r.request_hash, r.result, ({_IS_DUE}) AS due
    FROM (SELECT 1) AS one
    LEFT JOIN wallet_requests r ON r.wallet_id = $1 AND r.request_id = $3"""
_WALLET_COLUMNS = (
    "wallet_id, asset_code, active, overdraft_used, held, overdraft_limit, frozen, seq,"
    " version, chain_seq, chain_head"
)


@dataclass
class _Wallet:
    """The locked wallet row, changed in memory by the operation, written at the end."""

    wallet_id: str
    asset: str
    active: int
    overdraft_used: int
    held: int
    overdraft_limit: int
    frozen: bool
    seq: int
    version: int
    head: ChainHead

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> _Wallet:
        return cls(
            wallet_id=row["wallet_id"],
            asset=row["asset_code"],
            active=row["active"],
            overdraft_used=row["overdraft_used"],
            held=row["held"],
            overdraft_limit=row["overdraft_limit"],
            frozen=row["frozen"],
            seq=row["seq"],
            version=row["version"],
            head=ChainHead(row["chain_seq"], bytes(row["chain_head"])),
        )

    @property
    def available(self) -> int:
        return self.active + self.overdraft_used - self.held + self.overdraft_limit

    def balance(self, now_ms: int) -> Balance:
        return Balance(
            wallet_id=self.wallet_id,
            asset_code=self.asset,
            active=self.active,
            overdraft_used=self.overdraft_used,
            held=self.held,
            overdraft_limit=self.overdraft_limit,
            frozen=self.frozen,
            version=self.version,
            as_of_ms=now_ms,
        )

    def account(self, suffix: str) -> str:
        return f"wallet:{self.wallet_id}:{suffix}"


@dataclass
class _Tx:
    """One operation's changes, written by `_flush`."""

    wallet: _Wallet
    now_ms: int
    entry_id: str  # the operation's entry; entries made by settling time derive theirs
    entries: list[LedgerEntry] = field(default_factory=list)
    grants: dict[str, GrantRecord] = field(default_factory=dict)
    holds: dict[str, HoldRecord] = field(default_factory=dict)
    settled: bool = False  # settling time changed something (rows already written)

    def post(
        self,
        entry_id: str | None,
        kind: EntryKind,
        lines: Sequence[LedgerLine] = (),
        memo: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> LedgerEntry:
        """Append an entry at the wallet's next seq; no id: `<operation entry id>.<seq>`."""
        self.wallet.seq += 1
        entry = LedgerEntry(
            entry_id=entry_id or f"{self.entry_id}.{self.wallet.seq}",
            wallet_id=self.wallet.wallet_id,
            seq=self.wallet.seq,
            kind=kind,
            request_id=request_id,
            occurred_ms=self.now_ms,
            lines=tuple(lines),
            memo=dict(memo or {}),
        )
        self.entries.append(entry)
        return entry

    def put_grant(self, grant: Grant, *, expired: bool, pending: bool, version: int) -> None:
        """Stage a grant's new state; `version` is its stored version (0: a new grant)."""
        self.grants[grant.grant_id] = GrantRecord(grant, expired, pending, version + 1)

    def put_hold(self, hold: Hold, closed_ms: int | None, request_id: str, version: int) -> None:
        self.holds[hold.hold_id] = HoldRecord(hold, closed_ms, request_id, version + 1)

    @property
    def changed(self) -> bool:
        return bool(self.settled or self.entries or self.grants or self.holds)


class PostgresBackend:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def open_wallet(
        self, wallet_id: str, asset_code: str, overdraft_limit: int, now_ms: int
    ) -> None:
        """Nothing to do: the `wallets` row that WalletCore inserts is the hot state."""

    # ---- mutations ----

    async def grant(self, request: GrantRequest) -> GrantResult:
        _positive(request.amount, "amount")
        check_amount_range(request.effective_ms, "effective_ms")
        check_amount_range(request.expires_ms, "expires_ms")
        if request.expires_ms != NEVER_EXPIRES and request.expires_ms <= request.now_ms:
            raise ValidationFailed.for_field(
                "expires_ms", f"{request.expires_ms} is not in the future"
            )

        async def apply(conn: Queryable, tx: _Tx) -> GrantResult:
            wallet = tx.wallet
            pending_total = await _pending_total(conn, wallet.wallet_id)
            _within_range(
                wallet.active + pending_total + wallet.overdraft_limit + request.amount,
                "grants",
                wallet,
            )
            grant = Grant(
                grant_id=request.grant_id,
                wallet_id=wallet.wallet_id,
                kind=request.kind,
                amount=request.amount,
                remaining=request.amount,
                priority=request.priority,
                effective_ms=request.effective_ms,
                expires_ms=request.expires_ms,
                created_ms=request.now_ms,
            )
            source = f"{_FUNDING_ACCOUNT[request.kind]}:{wallet.asset}"
            lines = [
                LedgerLine(source, wallet.asset, -request.amount),
                LedgerLine(wallet.account(f"grant:{grant.grant_id}"), wallet.asset, request.amount),
            ]
            if request.effective_ms > request.now_ms:
                tx.put_grant(grant, expired=False, pending=True, version=0)
            else:
                lines += _activate(tx, GrantRecord(grant, False, True, 0))
            entry = tx.post(
                request.entry_id,
                EntryKind.TOP_UP if request.kind is GrantKind.PURCHASED else EntryKind.GRANT,
                lines,
                {**request.memo, "grant_id": grant.grant_id, "grant_kind": request.kind.value},
                request.idem.request_id,
            )
            if request.top_up_attempt:
                await _top_up_paid(conn, tx, request.top_up_attempt, grant)
            return GrantResult(
                entry_ids=(entry.entry_id,),
                balance=wallet.balance(request.now_ms),
                grant_id=grant.grant_id,
            )

        return await self._mutate(
            request.idem, request.wallet_id, request.now_ms, request.entry_id, apply
        )

    async def refund(self, request: RefundRequest) -> MutationResult:
        _positive(request.amount, "amount")

        async def apply(conn: Queryable, tx: _Tx) -> MutationResult:
            wallet = tx.wallet
            row = await conn.fetchrow(
                f"SELECT {GRANT_COLUMNS} FROM grants WHERE grant_id = $1 AND wallet_id = $2",
                request.grant_id,
                wallet.wallet_id,
            )
            if row is None:
                raise ResourceNotFound(
                    f"no grant {request.grant_id!r}",
                    metadata={"resource_type": "grant", "grant_id": request.grant_id},
                )
            record = grant_record(row)
            grant = record.grant
            if grant.kind is not GrantKind.PURCHASED:
                raise GrantNotRefundable(
                    f"grant {grant.grant_id} is {grant.kind.value}; only purchased grants "
                    "are refundable",
                    metadata={"grant_id": grant.grant_id, "kind": grant.kind.value},
                )
            if request.amount > grant.remaining:
                raise RefundExceedsRemaining(
                    f"grant {grant.grant_id} has {grant.remaining} remaining, "
                    f"{request.amount} requested",
                    metadata={
                        "grant_id": grant.grant_id,
                        "remaining": grant.remaining,
                        "required": request.amount,
                    },
                )
            if not record.pending:
                _require_available(wallet, request.amount)  # reserved funds stay reserved
                wallet.active -= request.amount
            tx.put_grant(
                replace(
                    grant,
                    remaining=grant.remaining - request.amount,
                    refunded=grant.refunded + request.amount,
                ),
                expired=False,
                pending=record.pending,
                version=record.version,
            )
            entry = tx.post(
                request.entry_id,
                EntryKind.REFUND,
                [
                    LedgerLine(
                        wallet.account(f"grant:{grant.grant_id}"), wallet.asset, -request.amount
                    ),
                    LedgerLine(f"topup_clearing:{wallet.asset}", wallet.asset, request.amount),
                ],
                {**request.memo, "grant_id": grant.grant_id},
                request.idem.request_id,
            )
            return MutationResult((entry.entry_id,), wallet.balance(request.now_ms))

        return await self._mutate(
            request.idem, request.wallet_id, request.now_ms, request.entry_id, apply
        )

    async def authorize(self, request: AuthorizeRequest) -> AuthorizeResult:
        check_amount_range(request.amount, "amount")
        check_amount_range(request.ttl_ms, "ttl_ms")

        async def apply(conn: Queryable, tx: _Tx) -> AuthorizeResult:
            wallet = tx.wallet
            _require_unfrozen(wallet)
            _within_range(wallet.held + request.amount, "held", wallet)
            _require_available(wallet, request.amount)
            expires_ms = request.now_ms + request.ttl_ms
            hold = Hold(
                hold_id=request.hold_id,
                wallet_id=wallet.wallet_id,
                state=HoldState.OPEN,
                authorized=request.amount,
                debited=0,
                captured=0,
                expires_ms=expires_ms,
                created_ms=request.now_ms,
                ttl_ms=request.ttl_ms,
            )
            wallet.held += request.amount
            tx.put_hold(hold, None, request.idem.request_id, version=0)
            entry = tx.post(
                request.entry_id,
                EntryKind.HOLD,
                memo={**request.memo, "hold_id": hold.hold_id, "amount": str(request.amount)},
                request_id=request.idem.request_id,
            )
            return AuthorizeResult(
                entry_ids=(entry.entry_id,),
                balance=wallet.balance(request.now_ms),
                hold_id=hold.hold_id,
                held=request.amount,
                expires_ms=expires_ms,
            )

        return await self._mutate(
            request.idem, request.wallet_id, request.now_ms, request.entry_id, apply, spend=True
        )

    async def capture(self, request: CaptureRequest) -> CaptureResult:
        check_amount_range(request.amount, "amount")

        async def apply(conn: Queryable, tx: _Tx) -> CaptureResult:
            wallet = tx.wallet
            record = await _open_hold(conn, tx, request.hold_id)
            hold = record.hold
            reserved = hold.authorized - hold.debited
            # Debits already drew part of the total: draw the rest now, or give back
            # their excess.
            to_draw = max(request.amount - hold.debited, 0)
            give_back = max(hold.debited - request.amount, 0)
            if to_draw > reserved:
                if not request.allow_overcapture:
                    raise CaptureExceedsHold(
                        f"capture of {to_draw} exceeds hold {hold.hold_id} "
                        f"({reserved} held) and overcapture is not allowed",
                        metadata={
                            "hold_id": hold.hold_id,
                            "asset_code": wallet.asset,
                            "held": reserved,
                            "required": to_draw,
                        },
                    )
                _require_unfrozen(wallet)  # the excess is a new spend
            # Its own reservation plus the free balance, never other holds' reservations.
            # Within the reservation this fails only if grants backing it have expired.
            _require_available(wallet, to_draw, reserved_for_this=reserved)
            if give_back:
                pending_total = await _pending_total(conn, wallet.wallet_id)
                _within_range(
                    wallet.active + pending_total + wallet.overdraft_limit + give_back,
                    "grants",
                    wallet,
                )
            wallet.held -= reserved
            reversals = (
                [_reverse_debits(tx, hold.hold_id, give_back, request.idem.request_id)]
                if give_back
                else []
            )
            draws, overdraft = await _draw(conn, tx, to_draw)
            released = max(reserved - to_draw, 0)
            tx.put_hold(
                replace(hold, state=HoldState.CAPTURED, captured=request.amount),
                request.now_ms,
                record.request_id,
                record.version,
            )
            entry = tx.post(
                request.entry_id,
                EntryKind.CAPTURE,
                _spend_lines(wallet, draws, overdraft, to_draw, request.cost),
                {
                    **request.memo,
                    "hold_id": hold.hold_id,
                    "charged": str(request.amount),
                    "released": str(released),
                },
                request.idem.request_id,
            )
            return CaptureResult(
                entry_ids=(*(r.entry_id for r in reversals), entry.entry_id),
                balance=wallet.balance(request.now_ms),
                hold_id=hold.hold_id,
                charged=request.amount,
                released=released,
                draws=tuple(draws),
                overdraft_drawn=overdraft,
                reversed=give_back,
            )

        return await self._mutate(
            request.idem, request.wallet_id, request.now_ms, request.entry_id, apply, spend=True
        )

    async def void(self, request: VoidRequest) -> VoidResult:
        async def apply(conn: Queryable, tx: _Tx) -> VoidResult:
            wallet = tx.wallet
            record = await _open_hold(conn, tx, request.hold_id)
            hold = record.hold
            released = hold.authorized - hold.debited
            wallet.held -= released
            tx.put_hold(
                replace(hold, state=HoldState.VOIDED),
                request.now_ms,
                record.request_id,
                record.version,
            )
            entry = tx.post(
                request.entry_id,
                EntryKind.RELEASE,
                memo={"hold_id": hold.hold_id, "released": str(released), "reason": "void"},
                request_id=request.idem.request_id,
            )
            return VoidResult((entry.entry_id,), wallet.balance(request.now_ms), released=released)

        return await self._mutate(
            request.idem, request.wallet_id, request.now_ms, request.entry_id, apply
        )

    async def debit(self, request: DebitRequest) -> DebitResult:
        _positive(request.amount, "amount")

        async def apply(conn: Queryable, tx: _Tx) -> DebitResult:
            wallet = tx.wallet
            record = await _open_hold(conn, tx, request.hold_id)
            hold = record.hold
            reserved = hold.authorized - hold.debited
            # The hold's reservation, then the free balance (available excludes this hold;
            # never other holds' reservations), which a frozen wallet does not lend. A
            # negative available (grants backing holds expired) lowers it: never overdrawn.
            usable = reserved + (min(wallet.available, 0) if wallet.frozen else wallet.available)
            charged = max(min(request.amount, usable), 0)
            from_hold = min(charged, reserved)
            wallet.held -= from_hold
            draws, overdraft = await _draw(conn, tx, charged)
            debited = replace(
                hold,
                debited=hold.debited + from_hold,
                expires_ms=max(hold.expires_ms, request.now_ms + hold.ttl_ms),
            )
            tx.put_hold(debited, None, record.request_id, record.version)
            entry = tx.post(
                request.entry_id,
                EntryKind.DEBIT,
                _spend_lines(wallet, draws, overdraft, charged, request.cost),
                {**request.memo, "hold_id": hold.hold_id},
                request.idem.request_id,
            )
            return DebitResult(
                entry_ids=(entry.entry_id,),
                balance=wallet.balance(request.now_ms),
                hold_id=hold.hold_id,
                charged=charged,
                shortfall=request.amount - charged,
                hold_remaining=debited.authorized - debited.debited,
                hold_debited=debited.debited,
                expires_ms=debited.expires_ms,
                draws=tuple(draws),
                overdraft_drawn=overdraft,
            )

        return await self._mutate(
            request.idem, request.wallet_id, request.now_ms, request.entry_id, apply, spend=True
        )

    async def extend_hold(self, request: ExtendHoldRequest) -> ExtendHoldResult:
        _positive(request.ttl_ms, "ttl_ms")
        check_amount_range(request.increase_by, "increase_by")

        async def apply(conn: Queryable, tx: _Tx) -> ExtendHoldResult:
            wallet = tx.wallet
            record = await _open_hold(conn, tx, request.hold_id)
            hold = record.hold
            entry_ids: tuple[str, ...] = ()
            if request.increase_by:
                _require_unfrozen(wallet)
                _require_available(wallet, request.increase_by)
                wallet.held += request.increase_by
                hold = replace(hold, authorized=hold.authorized + request.increase_by)
                entry = tx.post(
                    request.entry_id,
                    EntryKind.HOLD,
                    memo={"hold_id": hold.hold_id, "increase_by": str(request.increase_by)},
                    request_id=request.idem.request_id,
                )
                entry_ids = (entry.entry_id,)
            hold = replace(
                hold,
                ttl_ms=request.ttl_ms,
                expires_ms=max(hold.expires_ms, request.now_ms + request.ttl_ms),
            )
            tx.put_hold(hold, None, record.request_id, record.version)
            return ExtendHoldResult(
                entry_ids=entry_ids,
                balance=wallet.balance(request.now_ms),
                hold_id=hold.hold_id,
                authorized=hold.authorized,
                debited=hold.debited,
                expires_ms=hold.expires_ms,
                created_ms=hold.created_ms,
                ttl_ms=hold.ttl_ms,
            )

        return await self._mutate(
            request.idem, request.wallet_id, request.now_ms, request.entry_id, apply
        )

    async def charge(self, request: ChargeRequest) -> CaptureResult:
        check_amount_range(request.amount, "amount")

        async def apply(conn: Queryable, tx: _Tx) -> CaptureResult:
            wallet = tx.wallet
            _require_unfrozen(wallet)
            _require_available(wallet, request.amount)
            draws, overdraft = await _draw(conn, tx, request.amount)
            entry = tx.post(
                request.entry_id,
                EntryKind.CHARGE,
                _spend_lines(wallet, draws, overdraft, request.amount, request.cost),
                {**request.memo, "charged": str(request.amount)},
                request.idem.request_id,
            )
            return CaptureResult(
                entry_ids=(entry.entry_id,),
                balance=wallet.balance(request.now_ms),
                charged=request.amount,
                draws=tuple(draws),
                overdraft_drawn=overdraft,
            )

        return await self._mutate(
            request.idem, request.wallet_id, request.now_ms, request.entry_id, apply, spend=True
        )

    async def update_settings(self, request: SettingsRequest) -> MutationResult:
        if request.overdraft_limit is not None:
            check_amount_range(request.overdraft_limit, "overdraft_limit")

        async def apply(conn: Queryable, tx: _Tx) -> MutationResult:
            wallet = tx.wallet
            memo: dict[str, str] = {}
            if request.frozen is not None:
                wallet.frozen = request.frozen
                memo["frozen"] = "true" if request.frozen else "false"
            if request.overdraft_limit is not None:
                lowered_by = wallet.overdraft_limit - request.overdraft_limit
                if lowered_by > 0:
                    _require_available(wallet, lowered_by)  # never below -limit
                else:
                    pending_total = await _pending_total(conn, wallet.wallet_id)
                    _within_range(
                        wallet.active + pending_total + request.overdraft_limit, "limit", wallet
                    )
                wallet.overdraft_limit = request.overdraft_limit
                memo["overdraft_limit"] = str(request.overdraft_limit)
            entry = tx.post(
                request.entry_id,
                EntryKind.ADJUSTMENT,
                memo=memo,
                request_id=request.idem.request_id,
            )
            return MutationResult((entry.entry_id,), wallet.balance(request.now_ms))

        return await self._mutate(
            request.idem, request.wallet_id, request.now_ms, request.entry_id, apply
        )

    # ---- reads ----

    async def balance(self, wallet_id: str, now_ms: int) -> Balance:
        row = await self._pool.fetchrow(
            f"SELECT {_WALLET_COLUMNS}, {_IS_DUE} AS due FROM wallets WHERE wallet_id = $1",
            wallet_id,
            now_ms,
        )
        if row is None:
            raise _unknown_wallet(wallet_id)
        if row["due"]:
            return await self._settle_wallet(wallet_id, now_ms)
        return _Wallet.from_row(row).balance(now_ms)

    async def grants(self, wallet_id: str, now_ms: int) -> Sequence[Grant]:
        await self.balance(wallet_id, now_ms)  # settles time if anything is due
        rows = await self._pool.fetch(
            f"""SELECT {GRANT_COLUMNS} FROM grants WHERE wallet_id = $1
                ORDER BY expired OR remaining = 0, pending, {_DRAW_ORDER}""",
            wallet_id,
        )
        return [grant_record(row).grant for row in rows]

    async def hold(self, wallet_id: str, hold_id: str, now_ms: int) -> Hold:
        await self.balance(wallet_id, now_ms)
        row = await self._pool.fetchrow(
            f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = $1 AND wallet_id = $2",
            hold_id,
            wallet_id,
        )
        if row is None:
            raise UnknownHold(f"no hold {hold_id!r}", metadata={"hold_id": hold_id})
        return hold_record(row).hold

    async def sweep(self, now_ms: int, limit: int) -> int:
        rows = await self._pool.fetch(
            """SELECT wallet_id FROM (
                   SELECT wallet_id FROM grants WHERE pending AND effective_ms <= $1
                   UNION
                   SELECT wallet_id FROM grants
                   WHERE NOT expired AND expires_ms > 0 AND expires_ms <= $1
                   UNION
                   SELECT wallet_id FROM holds WHERE state = 'open' AND expires_ms <= $1
               ) due LIMIT $2""",
            now_ms,
            limit,
        )
        for row in rows:
            await self._settle_wallet(row["wallet_id"], now_ms)
        return len(rows)

    # ---- auto top-up: the rule and attempt rows are the hot state (top_up_store.py) ----

    async def mirror_top_up_rule(self, rule: TopUpRule) -> None:
        """Nothing to do: the spends read the rule's row itself."""

    async def take_top_ups(
        self, consumer: str, now_ms: int, limit: int, lease_ms: int
    ) -> Sequence[TopUpAttempt | WalletEvent]:
        """Pending attempts, leased (events are written by the spends themselves)."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await top_up_store.claim_attempts(conn, now_ms, lease_ms, limit)

    async def top_up_done(self, item: TopUpAttempt | WalletEvent) -> None:
        """Nothing to do: an attempt left the queue when its grant or failure was written."""

    async def fail_top_up(self, failure: TopUpFailure) -> TopUpStatus:
        attempt = failure.attempt
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock_wallet(conn, attempt.wallet_id)  # as the spends that read the rule
            recorded = await top_up_store.attempt_failed(
                conn, attempt.attempt_id, failure.error, failure.now_ms
            )
            rule = await top_up_store.get_rule(conn, attempt.wallet_id)
            if rule is None:
                return TopUpStatus(recorded, 0, 0, False, TopUpDisabledReason.NONE, 0)
            if not recorded:
                return _status(rule, recorded=False)
            status = _failed_status(rule, failure)
            await top_up_store.record_status(conn, attempt.wallet_id, status, "", failure.now_ms)
            await top_up_store.insert_events(conn, _failure_events(failure, status, rule))
            return status

    async def start_due_top_ups(self, now_ms: int, limit: int) -> int:
        async with self._pool.acquire() as conn:
            wallet_ids = await top_up_store.due_rules(conn, now_ms, limit)
        started = 0
        for wallet_id in wallet_ids:
            if await self._start_due_top_up(wallet_id, now_ms):
                started += 1
        return started

    async def _start_due_top_up(self, wallet_id: str, now_ms: int) -> bool:
        """As lua/top_up_due.lua: start an attempt if the rule still asks for one (its
        entry, an ADJUSTMENT without lines, names it), else take the rule off the list."""
        async with self._pool.acquire() as conn, conn.transaction():
            tx = _Tx(await _lock_wallet(conn, wallet_id), now_ms, new_id("txn"))
            await _settle(conn, tx)
            found = await top_up_store.live_rule(conn, wallet_id)
            started = False
            if found is not None and 0 < found[0].next_attempt_ms <= now_ms:
                rule, pending = found
                if rule.enabled and not pending and tx.wallet.available < rule.threshold:
                    attempt_id = f"{wallet_id}:{tx.wallet.seq + 1}"
                    tx.post(
                        tx.entry_id,
                        EntryKind.ADJUSTMENT,
                        memo={"reason": "auto_top_up", "attempt_id": attempt_id},
                    )
                    await _start_top_up(conn, tx, rule)
                    started = True
                else:
                    await top_up_store.schedule_rule(conn, wallet_id, 0)
            if tx.changed:
                tx.wallet.version += 1
                await _flush(conn, tx, None)
            return started

    # ---- the transaction ----

    async def _mutate(
        self,
        idem: Idempotency,
        wallet_id: str,
        now_ms: int,
        entry_id: str,
        apply: Callable[[Queryable, _Tx], Awaitable[R]],
        *,
        spend: bool = False,
    ) -> R:
        async with self._pool.acquire() as conn, conn.transaction():
            tx = _Tx(await _lock_wallet(conn, wallet_id), now_ms, entry_id)
            # Read after the lock: a concurrent duplicate has committed its record by now.
            stored = await conn.fetchrow(_REQUEST_AND_DUE, wallet_id, now_ms, idem.request_id)
            assert stored is not None
            if stored["result"] is not None:
                if stored["request_hash"] != idem.request_hash:
                    raise IdempotencyKeyReused(
                        f"request_id {idem.request_id!r} was already used for a different "
                        "request on this wallet",
                        metadata={"request_id": idem.request_id, "wallet_id": wallet_id},
                    )
                return decode_result(stored["result"])  # type: ignore[return-value]
            if stored["due"]:
                await _settle(conn, tx)
            before = tx.wallet.available
            tx.wallet.version += 1
            result = await apply(conn, tx)
            if spend and await _top_up_after_spend(conn, tx, before):
                result = replace(result, auto_top_up_triggered=True)
            record = RequestRecord(
                idem.request_id, idem.request_hash, encode_result(result), now_ms
            )
            await _flush(conn, tx, WalletRequest(wallet_id, record))
            return result

    async def _settle_wallet(self, wallet_id: str, now_ms: int) -> Balance:
        async with self._pool.acquire() as conn, conn.transaction():
            tx = _Tx(await _lock_wallet(conn, wallet_id), now_ms, new_id("txn"))
            await _settle(conn, tx)
            if tx.changed:
                tx.wallet.version += 1
                await _flush(conn, tx, None)
            return tx.wallet.balance(now_ms)


async def _top_up_after_spend(conn: Queryable, tx: _Tx, before: int) -> bool:
    """At the end of a spend whose available was `before` (as lua/top_up.lua): the
    `depleted` and `low_balance` alerts, then an attempt if the wallet's rule is enabled,
    available is below its threshold, none is pending and no retry delay runs. True if an
    attempt started."""
    wallet = tx.wallet
    after = wallet.available
    found = await top_up_store.live_rule(conn, wallet.wallet_id)
    threshold = 0 if found is None else found[0].threshold
    events: list[WalletEvent] = []
    if before > 0 >= after:
        events.append(_event(tx, WalletEventKind.DEPLETED, after, threshold))
    started = False
    if found is not None:
        rule, pending = found
        if before >= rule.threshold > after:
            events.append(_event(tx, WalletEventKind.LOW_BALANCE, after, threshold))
        if (
            rule.enabled
            and not pending
            and after < rule.threshold
            and tx.now_ms >= rule.next_attempt_ms
        ):
            await _start_top_up(conn, tx, rule)
            started = True
    await top_up_store.insert_events(conn, events)
    return started


def _event(tx: _Tx, kind: WalletEventKind, available: int, threshold: int) -> WalletEvent:
    return WalletEvent(
        event_id=f"{tx.entry_id}:{kind.value}",
        wallet_id=tx.wallet.wallet_id,
        kind=kind,
        occurred_ms=tx.now_ms,
        data={"available": str(available), "threshold": str(threshold)},
    )


async def _start_top_up(conn: Queryable, tx: _Tx, rule: TopUpRule) -> None:
    """A pending attempt named after the wallet's last entry (the one that started it)."""
    wallet = tx.wallet
    await top_up_store.insert_attempt(
        conn,
        TopUpAttempt(
            attempt_id=f"{wallet.wallet_id}:{wallet.seq}",
            wallet_id=wallet.wallet_id,
            asset_code=wallet.asset,
            amount=rule.amount or rule.top_up_to - wallet.available,
            payment_method_id=rule.payment_method_id,
            created_ms=tx.now_ms,
        ),
    )
    if rule.next_attempt_ms:
        await top_up_store.schedule_rule(conn, wallet.wallet_id, 0)


async def _top_up_paid(conn: Queryable, tx: _Tx, attempt_id: str, grant: Grant) -> None:
    """The grant pays out the attempt (as top_up_paid() in lua/top_up.lua): it succeeded,
    the rule's failures start over, and `auto_top_up_succeeded` is recorded."""
    wallet_id = tx.wallet.wallet_id
    await top_up_store.attempt_paid(conn, wallet_id, attempt_id, grant.grant_id, tx.now_ms)
    event = WalletEvent(
        event_id=f"{attempt_id}:succeeded",
        wallet_id=wallet_id,
        kind=WalletEventKind.AUTO_TOP_UP_SUCCEEDED,
        occurred_ms=tx.now_ms,
        data={"attempt_id": attempt_id, "grant_id": grant.grant_id, "amount": str(grant.amount)},
    )
    await top_up_store.insert_events(conn, [event])


def _failure_events(
    failure: TopUpFailure, status: TopUpStatus, rule: TopUpRule
) -> list[WalletEvent]:
    """`auto_top_up_failed`, and `auto_top_up_disabled` (the alert) when this failure
    disabled the rule (as lua/top_up_fail.lua)."""
    attempt = failure.attempt
    failed = WalletEvent(
        event_id=f"{attempt.attempt_id}:failed",
        wallet_id=attempt.wallet_id,
        kind=WalletEventKind.AUTO_TOP_UP_FAILED,
        occurred_ms=failure.now_ms,
        data={
            "attempt_id": attempt.attempt_id,
            "error": failure.error,
            "consecutive_failures": str(status.consecutive_failures),
            "next_attempt_ms": str(status.next_attempt_ms),
        },
    )
    if status.enabled or not rule.enabled:
        return [failed]
    disabled = WalletEvent(
        event_id=f"{attempt.attempt_id}:disabled",
        wallet_id=attempt.wallet_id,
        kind=WalletEventKind.AUTO_TOP_UP_DISABLED,
        occurred_ms=failure.now_ms,
        data={
            "attempt_id": attempt.attempt_id,
            "reason": status.disabled_reason.value,
            "consecutive_failures": str(status.consecutive_failures),
        },
    )
    return [failed, disabled]


def _status(rule: TopUpRule, *, recorded: bool) -> TopUpStatus:
    return TopUpStatus(
        recorded=recorded,
        consecutive_failures=rule.consecutive_failures,
        next_attempt_ms=rule.next_attempt_ms,
        enabled=rule.enabled,
        disabled_reason=rule.disabled_reason,
        rule_version=rule.version,
    )


def _failed_status(rule: TopUpRule, failure: TopUpFailure) -> TopUpStatus:
    """The rule after one more failure (as lua/top_up_fail.lua): an enabled rule disables
    itself at max failures or for an unusable payment method, else retries after a backoff."""
    failures = rule.consecutive_failures + 1
    enabled, reason, next_ms = rule.enabled, rule.disabled_reason, 0
    if enabled and (failure.method_invalid or failures >= rule.max_failures):
        enabled = False
        reason = (
            TopUpDisabledReason.PAYMENT_METHOD_INVALID
            if failure.method_invalid
            else TopUpDisabledReason.TOO_MANY_FAILURES
        )
    elif enabled:
        delay = retry_delay_ms(failures, failure.retry_base_ms, failure.retry_max_ms)
        next_ms = failure.now_ms + delay
    return replace(
        _status(rule, recorded=True),
        consecutive_failures=failures,
        next_attempt_ms=next_ms,
        enabled=enabled,
        disabled_reason=reason,
    )


async def _lock_wallet(conn: Queryable, wallet_id: str) -> _Wallet:
    row = await conn.fetchrow(
        f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE wallet_id = $1 FOR UPDATE", wallet_id
    )
    if row is None:
        raise _unknown_wallet(wallet_id)
    return _Wallet.from_row(row)


async def _settle(conn: Queryable, tx: _Tx) -> None:
    """Activate pending grants that became effective, expire grants and holds that ran out.

    Their rows are written at once (rarely needed), so the operation's own queries see them.
    """
    wallet_id, now = tx.wallet.wallet_id, tx.now_ms
    grants = await conn.fetch(
        f"SELECT {GRANT_COLUMNS} FROM grants WHERE wallet_id = $1 AND ({_DUE_GRANTS})"
        f" ORDER BY {_DRAW_ORDER}",
        wallet_id,
        now,
    )
    holds = await conn.fetch(
        f"SELECT {HOLD_COLUMNS} FROM holds WHERE wallet_id = $1 AND {_DUE_HOLDS}"
        " ORDER BY expires_ms, hold_id",
        wallet_id,
        now,
    )
    for row in grants:
        record = grant_record(row)
        grant = record.grant
        if grant.expires_ms != NEVER_EXPIRES and grant.expires_ms <= now:
            _expire_grant(tx, record)
        else:
            repaid = _activate(tx, record)
            if repaid:
                tx.post(None, EntryKind.ADJUSTMENT, repaid, {"reason": "overdraft_repayment"})
    for row in holds:
        expiring = hold_record(row)
        released = expiring.hold.authorized - expiring.hold.debited
        tx.wallet.held -= released
        tx.put_hold(
            replace(expiring.hold, state=HoldState.EXPIRED),
            expiring.hold.expires_ms,
            expiring.request_id,
            expiring.version,
        )
        tx.post(
            None,
            EntryKind.RELEASE,
            memo={"hold_id": expiring.hold.hold_id, "released": str(released), "reason": "expired"},
        )
    if grants or holds:
        await _write_rows(conn, tx)
        tx.settled = True


def _activate(tx: _Tx, record: GrantRecord) -> list[LedgerLine]:
    """Make a pending grant spendable. It first repays overdraft used; returns the lines
    of that repayment (grant -> overdraft), for the caller's entry."""
    wallet, grant = tx.wallet, record.grant
    repay = min(grant.remaining, -wallet.overdraft_used)
    lines: list[LedgerLine] = []
    if repay > 0:
        wallet.overdraft_used += repay
        grant = replace(grant, remaining=grant.remaining - repay)
        lines = [
            LedgerLine(wallet.account(f"grant:{grant.grant_id}"), wallet.asset, -repay),
            LedgerLine(wallet.account("overdraft"), wallet.asset, repay),
        ]
    wallet.active += grant.remaining
    tx.put_grant(grant, expired=False, pending=False, version=record.version)
    return lines


async def _pending_total(conn: Queryable, wallet_id: str) -> int:
    """Sum of the not-yet-effective grants' remaining (for range checks of totals)."""
    total: int = await conn.fetchval(
        "SELECT coalesce(sum(remaining), 0)::bigint FROM grants WHERE wallet_id = $1 AND pending",
        wallet_id,
    )
    return total


def _expire_grant(tx: _Tx, record: GrantRecord) -> None:
    """The grant's remainder leaves through an `expiry` entry to the expired account."""
    grant, wallet = record.grant, tx.wallet
    if not record.pending:
        wallet.active -= grant.remaining
    tx.put_grant(replace(grant, remaining=0), expired=True, pending=False, version=record.version)
    if grant.remaining > 0:
        tx.post(
            None,
            EntryKind.EXPIRY,
            [
                LedgerLine(
                    wallet.account(f"grant:{grant.grant_id}"), wallet.asset, -grant.remaining
                ),
                LedgerLine(f"expired:{wallet.asset}", wallet.asset, grant.remaining),
            ],
            {"grant_id": grant.grant_id},
        )


async def _open_hold(conn: Queryable, tx: _Tx, hold_id: str) -> HoldRecord:
    """The hold if it is still open; each hold resolves once."""
    row = await conn.fetchrow(
        f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = $1 AND wallet_id = $2",
        hold_id,
        tx.wallet.wallet_id,
    )
    if row is None:
        raise UnknownHold(f"no hold {hold_id!r}", metadata={"hold_id": hold_id})
    record = hold_record(row)
    state = record.hold.state
    metadata = {"hold_id": hold_id}
    if state is HoldState.CAPTURED:
        raise HoldAlreadyCaptured(f"hold {hold_id} is already captured", metadata=metadata)
    if state is HoldState.VOIDED:
        raise HoldVoided(f"hold {hold_id} was voided", metadata=metadata)
    if state is HoldState.EXPIRED:
        raise HoldExpired(f"hold {hold_id} expired", metadata=metadata)
    return record


async def _draw(conn: Queryable, tx: _Tx, amount: int) -> tuple[list[Draw], int]:
    """Take `amount` from active grants in drawdown order, the rest from the overdraft.

    The caller has checked availability, so the overdraft never passes its limit.
    """
    wallet = tx.wallet
    draws: list[Draw] = []
    left = amount
    if left > 0 and wallet.active > 0:
        rows = await conn.fetch(
            f"""SELECT {GRANT_COLUMNS} FROM grants
                WHERE wallet_id = $1 AND NOT expired AND NOT pending AND remaining > 0
                ORDER BY {_DRAW_ORDER}""",
            wallet.wallet_id,
        )
        for row in rows:
            if left == 0:
                break
            record = grant_record(row)
            take = min(record.grant.remaining, left)
            left -= take
            draws.append(Draw(record.grant.grant_id, take))
            tx.put_grant(
                replace(record.grant, remaining=record.grant.remaining - take),
                expired=False,
                pending=False,
                version=record.version,
            )
        wallet.active -= amount - left
    wallet.overdraft_used -= left
    return draws, left


def _reverse_debits(tx: _Tx, hold_id: str, amount: int, request_id: str) -> LedgerEntry:
    """Give back what a hold's debits drew beyond its capture total: revenue goes into a
    new adjustment grant (debits' draws are not tracked per grant), which first repays
    overdraft used. Returns the REVERSAL entry."""
    wallet = tx.wallet
    grant = Grant(
        grant_id=reversal_grant_id(wallet.wallet_id, tx.entry_id),
        wallet_id=wallet.wallet_id,
        kind=GrantKind.ADJUSTMENT,
        amount=amount,
        remaining=amount,
        priority=DEFAULT_PRIORITY,
        effective_ms=tx.now_ms,
        expires_ms=NEVER_EXPIRES,
        created_ms=tx.now_ms,
    )
    lines = [
        LedgerLine(f"revenue:{wallet.asset}", wallet.asset, -amount),
        LedgerLine(wallet.account(f"grant:{grant.grant_id}"), wallet.asset, amount),
    ]
    lines += _activate(tx, GrantRecord(grant, False, True, 0))
    return tx.post(
        None,
        EntryKind.REVERSAL,
        lines,
        {"hold_id": hold_id, "grant_id": grant.grant_id},
        request_id,
    )


def _spend_lines(
    wallet: _Wallet, draws: Sequence[Draw], overdraft: int, charged: int, cost: CostRecord | None
) -> list[LedgerLine]:
    lines = [
        LedgerLine(wallet.account(f"grant:{d.grant_id}"), wallet.asset, -d.amount) for d in draws
    ]
    if overdraft:
        lines.append(LedgerLine(wallet.account("overdraft"), wallet.asset, -overdraft))
    if charged:
        lines.append(LedgerLine(f"revenue:{wallet.asset}", wallet.asset, charged))
    if cost is not None and cost.amount:
        lines.append(LedgerLine(f"cost:{cost.currency}", cost.currency, cost.amount))
        lines.append(LedgerLine(f"provider_payable:{cost.currency}", cost.currency, -cost.amount))
    return lines


async def _write_rows(conn: Queryable, tx: _Tx) -> None:
    """Write the staged grant and hold rows (then forget them: they are stored)."""
    await ledger_store.upsert_grants(conn, tx.grants.values())
    await ledger_store.upsert_holds(conn, tx.holds.values())
    tx.grants.clear()
    tx.holds.clear()


async def _flush(conn: Queryable, tx: _Tx, request: WalletRequest | None) -> None:
    wallet = tx.wallet
    await _write_rows(conn, tx)
    head = ChainHead(wallet.head.seq, wallet.head.hash)
    chained = ledger_store.chain_entries(tx.entries, {wallet.wallet_id: head})
    await ledger_store.insert_entries(conn, chained)
    state = WalletState(
        wallet_id=wallet.wallet_id,
        active=wallet.active,
        overdraft_used=wallet.overdraft_used,
        held=wallet.held,
        frozen=wallet.frozen,
        overdraft_limit=wallet.overdraft_limit,
        seq=wallet.seq,
        version=wallet.version,
    )
    await ledger_store.save_wallet(conn, state, head)
    if request is not None:
        await ledger_store.record_requests(conn, [request])


# ---- checks ----


def _positive(value: int, field_name: str) -> None:
    check_amount_range(value, field_name)
    if value == 0:
        raise ValidationFailed.for_field(field_name, "must be greater than 0")


def _within_range(total: int, what: str, wallet: _Wallet) -> None:
    if total > LUA_EXACT_MAX:
        raise BalanceOutOfRange(
            f"wallet {wallet.wallet_id}: {what} would exceed {LUA_EXACT_MAX}",
            metadata={"wallet_id": wallet.wallet_id, "limit": LUA_EXACT_MAX},
        )


def _require_unfrozen(wallet: _Wallet) -> None:
    if wallet.frozen:
        raise WalletFrozen(
            f"wallet {wallet.wallet_id} is frozen", metadata={"wallet_id": wallet.wallet_id}
        )


def _require_available(wallet: _Wallet, required: int, *, reserved_for_this: int = 0) -> None:
    available = wallet.available + reserved_for_this
    if required > available:
        raise InsufficientFunds(
            f"wallet {wallet.wallet_id} has {available} available, {required} required",
            metadata={
                "wallet_id": wallet.wallet_id,
                "asset_code": wallet.asset,
                "available": available,
                "required": required,
            },
        )


def _unknown_wallet(wallet_id: str) -> UnknownWallet:
    return UnknownWallet(f"no wallet {wallet_id!r}", metadata={"wallet_id": wallet_id})


# ---- idempotency records ----

_RESULT_TYPES: dict[str, type[MutationResult]] = {
    cls.__name__: cls
    for cls in (
        MutationResult,
        AuthorizeResult,
        CaptureResult,
        DebitResult,
        ExtendHoldResult,
        GrantResult,
        VoidResult,
    )
}


def encode_result(result: MutationResult) -> str:
    """The stored form of a result (JSON), replayed by `decode_result`."""
    data = asdict(result)
    data.pop("replayed")
    data["type"] = type(result).__name__
    return json.dumps(data, separators=(",", ":"))


def decode_result(text: str) -> MutationResult:
    data = json.loads(text)
    cls = _RESULT_TYPES[data.pop("type")]
    data["balance"] = Balance(**data["balance"])
    data["entry_ids"] = tuple(data["entry_ids"])
    if "draws" in data:
        data["draws"] = tuple(Draw(**draw) for draw in data["draws"])
    return cls(**data, replayed=True)

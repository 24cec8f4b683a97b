"""The read side of the Postgres ledger: transactions (filtered, keyset-paginated, newest
first), one transaction with its lines, a wallet's balances derived from its entries, and
verification of a wallet's hash chain."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from obol_core.errors import InvalidArgument
from obol_core.postgres import Queryable

from .errors import ResourceNotFound, UnknownWallet
from .ledger_hash import GENESIS_HASH, chain_hash
from .ledger_store import GrantRecord, HoldRecord
from .model import (
    EntryKind,
    Grant,
    GrantKind,
    Hold,
    HoldState,
    LedgerEntry,
    LedgerLine,
    RequestRecord,
    WalletSnapshot,
)


@dataclass(frozen=True)
class Transaction:
    entry: LedgerEntry  # `lines` is empty unless lines were asked for
    customer_id: str
    asset_code: str  # the wallet's asset
    prev_hash: bytes
    hash: bytes
    recorded_at: datetime


@dataclass(frozen=True)
class TransactionFilter:
    wallet_id: str = ""
    customer_id: str = ""
    kinds: Sequence[EntryKind] = ()
    hold_id: str = ""
    start_ms: int | None = None  # occurred_ms >= start_ms
    end_ms: int | None = None  # occurred_ms < end_ms


_ENTRY_COLUMNS = """e.entry_id, e.wallet_id, e.seq, e.kind, e.request_id, e.occurred_ms,
    e.memo, e.prev_hash, e.hash, e.recorded_at, w.customer_id, w.asset_code"""


def page_key(transaction: Transaction) -> str:
    """The keyset position of a transaction, for `list_transactions(after=...)`."""
    return f"{transaction.entry.occurred_ms}:{transaction.entry.entry_id}"


def _parse_key(after: str) -> tuple[int, str]:
    millis, separator, entry_id = after.partition(":")
    if not separator or not millis.isdigit() or not entry_id:
        raise InvalidArgument.for_field("page_token", "is not a token this API issued")
    return int(millis), entry_id


async def list_transactions(
    conn: Queryable,
    where: TransactionFilter,
    *,
    limit: int,
    after: str | None = None,
    with_lines: bool = False,
) -> list[Transaction]:
    """Up to `limit` entries matching `where`, newest first, after the `page_key` given."""
    after_ms, after_id = _parse_key(after) if after else (None, None)
    rows = await conn.fetch(
        f"""SELECT {_ENTRY_COLUMNS}
            FROM ledger_entries e JOIN wallets w USING (wallet_id)
            WHERE ($1 = '' OR e.wallet_id = $1)
              AND ($2 = '' OR w.customer_id = $2)
              AND (cardinality($3::text[]) = 0 OR e.kind = ANY($3::text[]))
              AND ($4 = '' OR (e.memo ? 'hold_id' AND e.memo ->> 'hold_id' = $4))
              AND ($5::bigint IS NULL OR e.occurred_ms >= $5)
              AND ($6::bigint IS NULL OR e.occurred_ms < $6)
              AND ($7::bigint IS NULL OR (e.occurred_ms, e.entry_id) < ($7, $8::text))
            ORDER BY e.occurred_ms DESC, e.entry_id DESC
            LIMIT $9""",
        where.wallet_id,
        where.customer_id,
        [kind.value for kind in where.kinds],
        where.hold_id,
        where.start_ms,
        where.end_ms,
        after_ms,
        after_id,
        limit,
    )
    lines = await _lines(conn, [row["entry_id"] for row in rows]) if with_lines else {}
    return [_transaction(row, lines.get(row["entry_id"], [])) for row in rows]


async def get_transaction(conn: Queryable, entry_id: str) -> Transaction:
    """One entry with its lines (ResourceNotFound)."""
    row = await conn.fetchrow(
        f"""SELECT {_ENTRY_COLUMNS} FROM ledger_entries e JOIN wallets w USING (wallet_id)
            WHERE e.entry_id = $1""",
        entry_id,
    )
    if row is None:
        raise ResourceNotFound(
            f"no transaction {entry_id!r}",
            metadata={"resource_type": "transaction", "transaction_id": entry_id},
        )
    lines = await _lines(conn, [entry_id])
    return _transaction(row, lines.get(entry_id, []))


async def _lines(conn: Queryable, entry_ids: Sequence[str]) -> dict[str, list[LedgerLine]]:
    rows = await conn.fetch(
        """SELECT entry_id, account, asset_code, amount FROM ledger_lines
           WHERE entry_id = ANY($1::text[]) ORDER BY entry_id, line_no""",
        list(entry_ids),
    )
    lines: dict[str, list[LedgerLine]] = {}
    for row in rows:
        lines.setdefault(row["entry_id"], []).append(
            LedgerLine(row["account"], row["asset_code"], row["amount"])
        )
    return lines


def _entry(row: asyncpg.Record, lines: Sequence[LedgerLine]) -> LedgerEntry:
    return LedgerEntry(
        entry_id=row["entry_id"],
        wallet_id=row["wallet_id"],
        seq=row["seq"],
        kind=EntryKind(row["kind"]),
        request_id=row["request_id"],
        occurred_ms=row["occurred_ms"],
        lines=tuple(lines),
        memo=json.loads(row["memo"]),
    )


def _transaction(row: asyncpg.Record, lines: Sequence[LedgerLine]) -> Transaction:
    return Transaction(
        entry=_entry(row, lines),
        customer_id=row["customer_id"],
        asset_code=row["asset_code"],
        prev_hash=bytes(row["prev_hash"]),
        hash=bytes(row["hash"]),
        recorded_at=row["recorded_at"],
    )


# ---- grant and hold rows ----

GRANT_COLUMNS = (
    "grant_id, wallet_id, kind, amount, remaining, priority, effective_ms, expires_ms,"
    " created_ms, refunded, expired, pending, version"
)
HOLD_COLUMNS = (
    "hold_id, wallet_id, state, authorized, debited, captured, expires_ms, created_ms,"
    " ttl_ms, closed_ms, request_id, version"
)


def grant_record(row: asyncpg.Record) -> GrantRecord:
    return GrantRecord(
        grant=Grant(
            grant_id=row["grant_id"],
            wallet_id=row["wallet_id"],
            kind=GrantKind(row["kind"]),
            amount=row["amount"],
            remaining=row["remaining"],
            priority=row["priority"],
            effective_ms=row["effective_ms"],
            expires_ms=row["expires_ms"],
            created_ms=row["created_ms"],
            refunded=row["refunded"],
        ),
        expired=row["expired"],
        pending=row["pending"],
        version=row["version"],
    )


def hold_record(row: asyncpg.Record) -> HoldRecord:
    return HoldRecord(
        hold=Hold(
            hold_id=row["hold_id"],
            wallet_id=row["wallet_id"],
            state=HoldState(row["state"]),
            authorized=row["authorized"],
            debited=row["debited"],
            captured=row["captured"],
            expires_ms=row["expires_ms"],
            created_ms=row["created_ms"],
            ttl_ms=row["ttl_ms"],
        ),
        closed_ms=row["closed_ms"],
        request_id=row["request_id"],
        version=row["version"],
    )


async def wallet_snapshot(
    conn: Queryable, wallet_id: str, *, requests_since_ms: int
) -> WalletSnapshot:
    """What `obol rebuild` loads into Redis: the wallet's settings and counters, its grants
    with funds left, its open holds and its idempotency records since `requests_since_ms`.

    `seq` is the ledger's chain head, so the hot state continues the chain without a gap.
    """
    wallet = await conn.fetchrow(
        """SELECT asset_code, overdraft_limit, overdraft_used, frozen, chain_seq, version
           FROM wallets WHERE wallet_id = $1""",
        wallet_id,
    )
    if wallet is None:
        raise UnknownWallet(f"no wallet {wallet_id!r}", metadata={"wallet_id": wallet_id})
    grants = await conn.fetch(
        f"""SELECT {GRANT_COLUMNS} FROM grants
            WHERE wallet_id = $1 AND NOT expired AND remaining > 0 ORDER BY grant_id""",
        wallet_id,
    )
    holds = await conn.fetch(
        f"""SELECT {HOLD_COLUMNS} FROM holds WHERE wallet_id = $1 AND state = 'open'
            ORDER BY hold_id""",
        wallet_id,
    )
    requests = await conn.fetch(
        """SELECT request_id, request_hash, result, created_ms FROM wallet_requests
           WHERE wallet_id = $1 AND created_ms >= $2 ORDER BY created_ms""",
        wallet_id,
        requests_since_ms,
    )
    return WalletSnapshot(
        wallet_id=wallet_id,
        asset_code=wallet["asset_code"],
        overdraft_limit=wallet["overdraft_limit"],
        overdraft_used=wallet["overdraft_used"],
        frozen=wallet["frozen"],
        seq=wallet["chain_seq"],
        version=wallet["version"],
        grants=[grant_record(row).grant for row in grants],
        open_holds=[hold_record(row).hold for row in holds],
        requests=[
            RequestRecord(r["request_id"], r["request_hash"], r["result"], r["created_ms"])
            for r in requests
        ],
    )


# ---- balances derived from the ledger ----


@dataclass(frozen=True)
class LedgerBalances:
    """A wallet's accounts summed over its entries."""

    grants: dict[str, int]  # grant id -> balance of `wallet:<w>:grant:<g>`
    overdraft: int  # balance of `wallet:<w>:overdraft` (<= 0)

    @property
    def total(self) -> int:
        """The wallet's balance: its grants' remaining plus the overdraft used."""
        return sum(self.grants.values()) + self.overdraft


async def wallet_balances(conn: Queryable, wallet_id: str) -> LedgerBalances:
    prefix = f"wallet:{wallet_id}:"
    rows = await conn.fetch(
        """SELECT l.account, sum(l.amount)::bigint AS balance
           FROM ledger_entries e JOIN ledger_lines l USING (entry_id)
           WHERE e.wallet_id = $1 AND starts_with(l.account, $2)
           GROUP BY l.account""",
        wallet_id,
        prefix,
    )
    grants: dict[str, int] = {}
    overdraft = 0
    for row in rows:
        name = row["account"].removeprefix(prefix)
        if name.startswith("grant:"):
            grants[name.removeprefix("grant:")] = row["balance"]
        else:
            overdraft += row["balance"]
    return LedgerBalances(grants, overdraft)


async def unbalanced_assets(conn: Queryable) -> dict[str, int]:
    """Assets whose lines, over the whole ledger, do not sum to zero (expected: none)."""
    rows = await conn.fetch(
        """SELECT asset_code, sum(amount) AS total FROM ledger_lines
           GROUP BY asset_code HAVING sum(amount) <> 0"""
    )
    return {row["asset_code"]: int(row["total"]) for row in rows}


# ---- hash chain ----


@dataclass(frozen=True)
class ChainVerification:
    wallet_id: str
    valid: bool
    entries_checked: int
    head_seq: int
    head_hash: bytes
    first_invalid_seq: int = 0
    first_invalid_entry_id: str = ""
    problem: str = ""


_VERIFY_PAGE = 1000


async def verify_chain(conn: Queryable, wallet_id: str, *, from_seq: int = 0) -> ChainVerification:
    """Recompute the wallet's chain from `from_seq` (0/1: the start; later starts trust the
    hash stored at `from_seq - 1`), each entry's lines summing to zero per asset, and that
    the chain ends at the wallet's recorded head."""
    wallet = await conn.fetchrow(
        "SELECT chain_seq, chain_head FROM wallets WHERE wallet_id = $1", wallet_id
    )
    if wallet is None:
        raise UnknownWallet(f"no wallet {wallet_id!r}", metadata={"wallet_id": wallet_id})
    seq, prev = 0, GENESIS_HASH
    if from_seq > 1:
        stored = await conn.fetchval(
            "SELECT hash FROM ledger_entries WHERE wallet_id = $1 AND seq = $2",
            wallet_id,
            from_seq - 1,
        )
        if stored is not None:
            seq, prev = from_seq - 1, bytes(stored)
    checked = 0

    def result(bad: LedgerEntry | None = None, problem: str = "") -> ChainVerification:
        return ChainVerification(
            wallet_id=wallet_id,
            valid=not problem,
            entries_checked=checked,
            head_seq=seq,
            head_hash=prev,
            first_invalid_seq=bad.seq if bad else (seq + 1 if problem else 0),
            first_invalid_entry_id=bad.entry_id if bad else "",
            problem=problem,
        )

    while True:
        rows = await conn.fetch(
            """SELECT e.entry_id, e.wallet_id, e.seq, e.kind, e.request_id, e.occurred_ms,
                      e.memo, e.prev_hash, e.hash,
                      coalesce((SELECT json_agg(json_build_array(l.account, l.asset_code,
                                                                 l.amount::text)
                                                ORDER BY l.line_no)
                                FROM ledger_lines l WHERE l.entry_id = e.entry_id),
                               '[]') AS lines
               FROM ledger_entries e WHERE e.wallet_id = $1 AND e.seq > $2
               ORDER BY e.seq LIMIT $3""",
            wallet_id,
            seq,
            _VERIFY_PAGE,
        )
        for row in rows:
            try:
                lines = [LedgerLine(a, c, int(n)) for a, c, n in json.loads(row["lines"])]
                entry = _entry(row, lines)
            except ValueError as err:
                return result(None, f"entry {row['entry_id']} does not decode: {err}")
            problem = _entry_problem(entry, row, seq + 1, prev)
            if problem:
                return result(entry, problem)
            seq, prev = entry.seq, bytes(row["hash"])
            checked += 1
        if len(rows) < _VERIFY_PAGE:
            break
    if seq != wallet["chain_seq"] or prev != bytes(wallet["chain_head"]):
        return result(
            None,
            f"the chain ends at seq {seq} but the wallet's recorded head is seq "
            f"{wallet['chain_seq']} (entries missing or head altered)",
        )
    return result()


def _entry_problem(entry: LedgerEntry, row: asyncpg.Record, seq: int, prev: bytes) -> str:
    if entry.seq != seq:
        return f"seq {seq} is missing (next entry has seq {entry.seq})"
    if bytes(row["prev_hash"]) != prev:
        return "prev_hash does not match the previous entry's hash"
    if chain_hash(prev, entry) != bytes(row["hash"]):
        return "hash does not match the entry's content (altered)"
    totals: dict[str, int] = {}
    for line in entry.lines:
        totals[line.asset_code] = totals.get(line.asset_code, 0) + line.amount
    unbalanced = sorted(asset for asset, total in totals.items() if total)
    if unbalanced:
        return f"lines do not sum to zero for {', '.join(unbalanced)}"
    return ""


# ---- grants and holds as written to Postgres (behind the hot state on the Redis backend) ----


async def get_grant(conn: Queryable, grant_id: str) -> Grant | None:
    row = await conn.fetchrow(f"SELECT {GRANT_COLUMNS} FROM grants WHERE grant_id = $1", grant_id)
    return None if row is None else grant_record(row).grant


async def list_holds(
    conn: Queryable,
    wallet_id: str,
    *,
    states: Sequence[HoldState],
    limit: int,
    after: str | None,
) -> list[Hold]:
    """A wallet's holds, oldest first (ids sort by creation), optionally only some states."""
    rows = await conn.fetch(
        f"""SELECT {HOLD_COLUMNS} FROM holds
            WHERE wallet_id = $1
              AND (cardinality($2::text[]) = 0 OR state = ANY($2::text[]))
              AND ($3::text IS NULL OR hold_id > $3)
            ORDER BY hold_id LIMIT $4""",
        wallet_id,
        [state.value for state in states],
        after,
        limit,
    )
    return [hold_record(row).hold for row in rows]


async def transactions_posted_since(
    conn: Queryable,
    since: datetime,
    *,
    kinds: Sequence[EntryKind],
    customer_id: str,
    limit: int,
    with_lines: bool,
) -> list[Transaction]:
    """Entries recorded at or after `since`, in recording order (for WatchTransactions)."""
    rows = await conn.fetch(
        f"""SELECT {_ENTRY_COLUMNS}
            FROM ledger_entries e JOIN wallets w USING (wallet_id)
            WHERE e.recorded_at >= $1
              AND (cardinality($2::text[]) = 0 OR e.kind = ANY($2::text[]))
              AND ($3 = '' OR w.customer_id = $3)
            ORDER BY e.recorded_at, e.entry_id
            LIMIT $4""",
        since,
        [kind.value for kind in kinds],
        customer_id,
        limit,
    )
    lines = await _lines(conn, [row["entry_id"] for row in rows]) if with_lines else {}
    return [_transaction(row, lines.get(row["entry_id"], [])) for row in rows]

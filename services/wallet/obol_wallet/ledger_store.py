"""Postgres writes of the ledger and of wallet state, shared by the write-behind worker and
the Postgres backend.

- Entries are inserted if absent (`ON CONFLICT (entry_id) DO NOTHING`) and chained: each
  wallet's entries are hashed in `seq` order from `wallets.chain_head` / `chain_seq`
  (see ledger_hash.py). An entry at or below `chain_seq` is already in Postgres (a replay)
  and is skipped; one above `chain_seq + 1` means entries are missing: `ChainGap`.
- Grant, hold and wallet rows are written only when the incoming `version` is newer than
  the stored one, so a late or replayed state never overwrites a newer row.

Callers run these inside their transaction, holding the wallets' rows locked
(`lock_chain_heads`, or the backend's own `SELECT ... FOR UPDATE`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from obol_core.postgres import Queryable

from .errors import UnknownWallet
from .ledger_hash import chain_hash
from .model import Grant, Hold, LedgerEntry, RequestRecord


class LedgerWriteError(Exception):
    """The ledger cannot take these entries; nothing may be acknowledged."""


class ChainGap(LedgerWriteError):
    """An entry's seq is not the next of its wallet's chain: entries before it are missing."""

    def __init__(self, wallet_id: str, expected_seq: int, entry: LedgerEntry) -> None:
        super().__init__(
            f"wallet {wallet_id}: entry {entry.entry_id} has seq {entry.seq}, "
            f"expected {expected_seq} (earlier entries are missing)"
        )
        self.wallet_id = wallet_id
        self.expected_seq = expected_seq
        self.entry_id = entry.entry_id


@dataclass
class ChainHead:
    """The last chained entry of a wallet in Postgres (seq 0 and 32 zero bytes: none)."""

    seq: int
    hash: bytes


@dataclass(frozen=True)
class ChainedEntry:
    entry: LedgerEntry
    prev_hash: bytes
    hash: bytes


# What the writes take: the Postgres backend passes the dataclasses below, the
# write-behind passes the stream codec's rows (GrantRow, HoldRow, WalletRow) as they are.


class GrantVersion(Protocol):
    @property
    def grant(self) -> Grant: ...
    @property
    def expired(self) -> bool: ...
    @property
    def pending(self) -> bool: ...
    @property
    def version(self) -> int: ...


class HoldVersion(Protocol):
    @property
    def hold(self) -> Hold: ...
    @property
    def closed_ms(self) -> int | None: ...
    @property
    def request_id(self) -> str: ...
    @property
    def version(self) -> int: ...


class WalletVersion(Protocol):
    @property
    def wallet_id(self) -> str: ...
    @property
    def active(self) -> int: ...
    @property
    def overdraft_used(self) -> int: ...
    @property
    def held(self) -> int: ...
    @property
    def frozen(self) -> bool: ...
    @property
    def overdraft_limit(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def version(self) -> int: ...


@dataclass(frozen=True)
class GrantRecord:
    grant: Grant
    expired: bool
    pending: bool  # not yet effective: its remaining is not in the wallet's `active`
    version: int


@dataclass(frozen=True)
class HoldRecord:
    hold: Hold
    closed_ms: int | None
    request_id: str
    version: int


@dataclass(frozen=True)
class WalletState:
    """A wallet's hot counters as of `version`."""

    wallet_id: str
    active: int
    overdraft_used: int
    held: int
    frozen: bool
    overdraft_limit: int
    seq: int
    version: int


@dataclass(frozen=True)
class WalletRequest:
    wallet_id: str
    record: RequestRecord


async def lock_chain_heads(conn: Queryable, wallet_ids: Iterable[str]) -> dict[str, ChainHead]:
    """Lock the wallets' rows (in id order, so concurrent lockers never deadlock) and return
    their chain heads; UnknownWallet if one has no row."""
    wanted = sorted(set(wallet_ids))
    rows = await conn.fetch(
        """SELECT wallet_id, chain_seq, chain_head FROM wallets
           WHERE wallet_id = ANY($1::text[]) ORDER BY wallet_id FOR UPDATE""",
        wanted,
    )
    heads = {
        row["wallet_id"]: ChainHead(row["chain_seq"], bytes(row["chain_head"])) for row in rows
    }
    missing = [w for w in wanted if w not in heads]
    if missing:
        raise UnknownWallet(
            f"no wallet row for {', '.join(missing)}", metadata={"wallet_id": missing[0]}
        )
    return heads


def chain_entries(
    entries: Iterable[LedgerEntry], heads: Mapping[str, ChainHead]
) -> list[ChainedEntry]:
    """Hash the entries not yet in the chain, in seq order per wallet, advancing `heads`."""
    by_wallet: dict[str, dict[int, LedgerEntry]] = {}
    for entry in entries:
        by_wallet.setdefault(entry.wallet_id, {})[entry.seq] = entry
    chained: list[ChainedEntry] = []
    for wallet_id, by_seq in by_wallet.items():
        head = heads[wallet_id]
        for seq in sorted(by_seq):
            entry = by_seq[seq]
            if seq <= head.seq:
                continue  # already chained: a replay
            if seq != head.seq + 1:
                raise ChainGap(wallet_id, head.seq + 1, entry)
            digest = chain_hash(head.hash, entry)
            chained.append(ChainedEntry(entry, head.hash, digest))
            head.seq, head.hash = seq, digest
    return chained


async def insert_entries(conn: Queryable, chained: Sequence[ChainedEntry]) -> None:
    """Insert entries and their lines; an entry id already taken is a LedgerWriteError."""
    if not chained:
        return
    entries = [c.entry for c in chained]
    inserted = await conn.fetch(
        """INSERT INTO ledger_entries (entry_id, wallet_id, seq, kind, request_id, occurred_ms,
                                       memo, prev_hash, hash)
           SELECT e.id, e.w, e.seq, e.kind, e.rid, e.at, e.memo::jsonb, e.prev, e.hash
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                       $6::bigint[], $7::text[], $8::bytea[], $9::bytea[])
                AS e(id, w, seq, kind, rid, at, memo, prev, hash)
           ON CONFLICT (entry_id) DO NOTHING
           RETURNING entry_id""",
        [e.entry_id for e in entries],
        [e.wallet_id for e in entries],
        [e.seq for e in entries],
        [e.kind.value for e in entries],
        [e.request_id for e in entries],
        [e.occurred_ms for e in entries],
        [json.dumps(dict(e.memo), sort_keys=True) for e in entries],
        [c.prev_hash for c in chained],
        [c.hash for c in chained],
    )
    if len(inserted) != len(entries):
        taken = {e.entry_id for e in entries} - {row["entry_id"] for row in inserted}
        raise LedgerWriteError(f"entry ids already used by other entries: {sorted(taken)}")
    lines = [(e.entry_id, n, line) for e in entries for n, line in enumerate(e.lines, 1)]
    if lines:
        await conn.execute(
            """INSERT INTO ledger_lines (entry_id, line_no, account, asset_code, amount)
               SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::bigint[])""",
            [entry_id for entry_id, _, _ in lines],
            [n for _, n, _ in lines],
            [line.account for _, _, line in lines],
            [line.asset_code for _, _, line in lines],
            [line.amount for _, _, line in lines],
        )


async def save_chain_heads(conn: Queryable, heads: Mapping[str, ChainHead]) -> None:
    if not heads:
        return
    await conn.execute(
        """UPDATE wallets w SET chain_seq = h.seq, chain_head = h.hash
           FROM unnest($1::text[], $2::bigint[], $3::bytea[]) AS h(id, seq, hash)
           WHERE w.wallet_id = h.id""",
        list(heads),
        [h.seq for h in heads.values()],
        [h.hash for h in heads.values()],
    )


async def upsert_grants(conn: Queryable, records: Iterable[GrantVersion]) -> None:
    """Insert new grants; update a stored one only from a newer version."""
    newest: dict[str, GrantVersion] = {}
    for record in records:
        seen = newest.get(record.grant.grant_id)
        if seen is None or record.version > seen.version:
            newest[record.grant.grant_id] = record
    if not newest:
        return
    grants = [r.grant for r in newest.values()]
    await conn.execute(
        """INSERT INTO grants (grant_id, wallet_id, kind, priority, amount, remaining, refunded,
                               effective_ms, expires_ms, created_ms, expired, pending, version)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[],
                                $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                                $10::bigint[], $11::bool[], $12::bool[], $13::bigint[])
           ON CONFLICT (grant_id) DO UPDATE SET
               priority = EXCLUDED.priority, remaining = EXCLUDED.remaining,
               refunded = EXCLUDED.refunded, effective_ms = EXCLUDED.effective_ms,
               expires_ms = EXCLUDED.expires_ms, expired = EXCLUDED.expired,
               pending = EXCLUDED.pending, version = EXCLUDED.version
           WHERE grants.version < EXCLUDED.version""",
        [g.grant_id for g in grants],
        [g.wallet_id for g in grants],
        [g.kind.value for g in grants],
        [g.priority for g in grants],
        [g.amount for g in grants],
        [g.remaining for g in grants],
        [g.refunded for g in grants],
        [g.effective_ms for g in grants],
        [g.expires_ms for g in grants],
        [g.created_ms for g in grants],
        [r.expired for r in newest.values()],
        [r.pending for r in newest.values()],
        [r.version for r in newest.values()],
    )


async def upsert_holds(conn: Queryable, records: Iterable[HoldVersion]) -> None:
    """Insert new holds; update a stored one only from a newer version."""
    newest: dict[str, HoldVersion] = {}
    for record in records:
        seen = newest.get(record.hold.hold_id)
        if seen is None or record.version > seen.version:
            newest[record.hold.hold_id] = record
    if not newest:
        return
    holds = [r.hold for r in newest.values()]
    await conn.execute(
        """INSERT INTO holds (hold_id, wallet_id, state, authorized, debited, captured,
                              expires_ms, created_ms, closed_ms, request_id, version, ttl_ms)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                                $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                                $10::text[], $11::bigint[], $12::bigint[])
           ON CONFLICT (hold_id) DO UPDATE SET
               state = EXCLUDED.state, authorized = EXCLUDED.authorized,
               debited = EXCLUDED.debited, captured = EXCLUDED.captured,
               expires_ms = EXCLUDED.expires_ms, closed_ms = EXCLUDED.closed_ms,
               version = EXCLUDED.version, ttl_ms = EXCLUDED.ttl_ms
           WHERE holds.version < EXCLUDED.version""",
        [h.hold_id for h in holds],
        [h.wallet_id for h in holds],
        [h.state.value for h in holds],
        [h.authorized for h in holds],
        [h.debited for h in holds],
        [h.captured for h in holds],
        [h.expires_ms for h in holds],
        [h.created_ms for h in holds],
        [r.closed_ms for r in newest.values()],
        [r.request_id for r in newest.values()],
        [r.version for r in newest.values()],
        [h.ttl_ms for h in holds],
    )


async def update_wallets(conn: Queryable, states: Iterable[WalletVersion]) -> None:
    """Write wallets' counters where `version` is newer than the stored one."""
    newest: dict[str, WalletVersion] = {}
    for state in states:
        seen = newest.get(state.wallet_id)
        if seen is None or state.version > seen.version:
            newest[state.wallet_id] = state
    if not newest:
        return
    values = list(newest.values())
    await conn.execute(
        """UPDATE wallets w SET active = s.active, overdraft_used = s.od, held = s.held,
                  frozen = s.frozen, overdraft_limit = s.lim, seq = s.seq, version = s.version
           FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bool[],
                       $6::bigint[], $7::bigint[], $8::bigint[])
                AS s(id, active, od, held, frozen, lim, seq, version)
           WHERE w.wallet_id = s.id AND w.version < s.version""",
        [s.wallet_id for s in values],
        [s.active for s in values],
        [s.overdraft_used for s in values],
        [s.held for s in values],
        [s.frozen for s in values],
        [s.overdraft_limit for s in values],
        [s.seq for s in values],
        [s.version for s in values],
    )


async def save_wallet(conn: Queryable, state: WalletVersion, head: ChainHead) -> None:
    """One wallet's counters (if newer) and chain head in one statement: the Postgres
    backend's write, made while it holds the wallet's row lock."""
    await conn.execute(
        """UPDATE wallets SET active = $2, overdraft_used = $3, held = $4, frozen = $5,
                  overdraft_limit = $6, seq = $7, version = $8, chain_seq = $9, chain_head = $10
           WHERE wallet_id = $1 AND version < $8""",
        state.wallet_id,
        state.active,
        state.overdraft_used,
        state.held,
        state.frozen,
        state.overdraft_limit,
        state.seq,
        state.version,
        head.seq,
        head.hash,
    )


async def record_requests(conn: Queryable, requests: Iterable[WalletRequest]) -> None:
    """Store idempotency records; the first record of a (wallet, request id) stays."""
    items = list(requests)
    if not items:
        return
    await conn.execute(
        """INSERT INTO wallet_requests (wallet_id, request_id, request_hash, result, created_ms)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
           ON CONFLICT (wallet_id, request_id) DO NOTHING""",
        [r.wallet_id for r in items],
        [r.record.request_id for r in items],
        [r.record.request_hash for r in items],
        [r.record.result for r in items],
        [r.record.created_ms for r in items],
    )

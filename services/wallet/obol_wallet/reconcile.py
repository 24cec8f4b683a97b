"""Reconciliation: do the ledger, the Postgres rows and the hot state (Redis) agree?

Per wallet, `ledger_drift` checks Postgres against itself: every grant account's ledger
balance equals the grant's remaining, the overdraft account equals `overdraft_used`,
`active` is the sum of active grants' remaining and `held` the sum of open holds. For the
Redis backend, `hot_drift` compares the hot state with the Postgres rows: counters,
every grant's remaining, every open hold. Expected: no drift at all once the write-behind
has drained. A wallet whose hot state is newer than Postgres while its partition stream
still has a backlog is *lagging*, not drifting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from obol_core.postgres import Queryable

from .errors import UnknownHold, WalletNotHydrated
from .ledger_queries import unbalanced_assets, wallet_balances
from .model import Balance, Grant, Hold, HoldState


class HotState(Protocol):
    """What reconciliation reads from the hot backend (RedisBackend has it)."""

    async def balance(self, wallet_id: str, now_ms: int) -> Balance: ...

    async def grants(self, wallet_id: str, now_ms: int) -> Sequence[Grant]: ...

    async def hold(self, wallet_id: str, hold_id: str, now_ms: int) -> Hold: ...


@dataclass(frozen=True)
class Drift:
    wallet_id: str  # "" for ledger-wide findings
    what: str
    expected: object  # the reference side (the ledger, or Postgres for the hot state)
    found: object

    def __str__(self) -> str:
        where = f"wallet {self.wallet_id}: " if self.wallet_id else ""
        return f"{where}{self.what}: expected {self.expected}, found {self.found}"


@dataclass
class Report:
    wallets_checked: int = 0
    drift: list[Drift] = field(default_factory=list)
    lagging: list[str] = field(default_factory=list)  # hot state ahead, backlog pending


async def ledger_drift(conn: Queryable, wallet_id: str) -> list[Drift]:
    """Postgres against itself: ledger sums vs grant rows vs wallet counters."""
    wallet = await conn.fetchrow(
        "SELECT active, overdraft_used, held FROM wallets WHERE wallet_id = $1", wallet_id
    )
    if wallet is None:
        return [Drift(wallet_id, "wallet row", "present", "missing")]
    grants = await conn.fetch(
        "SELECT grant_id, remaining, pending, expired FROM grants WHERE wallet_id = $1",
        wallet_id,
    )
    held = await conn.fetchval(
        """SELECT coalesce(sum(authorized - debited), 0)::bigint FROM holds
           WHERE wallet_id = $1 AND state = 'open'""",
        wallet_id,
    )
    ledger = await wallet_balances(conn, wallet_id)
    drift: list[Drift] = []
    for grant in grants:
        grant_id, remaining = grant["grant_id"], grant["remaining"]
        in_ledger = ledger.grants.pop(grant_id, 0)
        if in_ledger != remaining:
            drift.append(Drift(wallet_id, f"grant {grant_id} remaining", in_ledger, remaining))
    drift += [
        Drift(wallet_id, f"grant {grant_id} remaining", balance, "no grant row")
        for grant_id, balance in ledger.grants.items()
        if balance
    ]
    if ledger.overdraft != wallet["overdraft_used"]:
        drift.append(Drift(wallet_id, "overdraft_used", ledger.overdraft, wallet["overdraft_used"]))
    active = sum(g["remaining"] for g in grants if not g["pending"] and not g["expired"])
    if active != wallet["active"]:
        drift.append(Drift(wallet_id, "active (sum of active grants)", active, wallet["active"]))
    if held != wallet["held"]:
        drift.append(Drift(wallet_id, "held (sum of open holds)", held, wallet["held"]))
    return drift


async def hot_drift(
    conn: Queryable, hot: HotState, wallet_id: str, now_ms: int
) -> tuple[list[Drift], bool]:
    """The hot state against the Postgres rows; (drift, hot state is newer than Postgres)."""
    row = await conn.fetchrow(
        """SELECT active, overdraft_used, held, frozen, overdraft_limit, version
           FROM wallets WHERE wallet_id = $1""",
        wallet_id,
    )
    if row is None:
        return [Drift(wallet_id, "wallet row", "present", "missing")], False
    try:
        balance = await hot.balance(wallet_id, now_ms)
    except WalletNotHydrated:
        return [Drift(wallet_id, "hot state", "hydrated", "missing (run obol rebuild)")], False
    if balance.version > row["version"]:
        return [], True
    drift = [
        Drift(wallet_id, name, row[column], value)
        for name, column, value in (
            ("version", "version", balance.version),
            ("active", "active", balance.active),
            ("overdraft_used", "overdraft_used", balance.overdraft_used),
            ("held", "held", balance.held),
            ("frozen", "frozen", balance.frozen),
            ("overdraft_limit", "overdraft_limit", balance.overdraft_limit),
        )
        if row[column] != value
    ]
    drift += await _grant_drift(conn, hot, wallet_id, now_ms)
    drift += await _hold_drift(conn, hot, wallet_id, now_ms)
    return drift, False


async def _grant_drift(conn: Queryable, hot: HotState, wallet_id: str, now_ms: int) -> list[Drift]:
    stored = {
        row["grant_id"]: row["remaining"]
        for row in await conn.fetch(
            "SELECT grant_id, remaining FROM grants WHERE wallet_id = $1", wallet_id
        )
    }
    drift: list[Drift] = []
    seen: set[str] = set()
    for grant in await hot.grants(wallet_id, now_ms):
        seen.add(grant.grant_id)
        expected = stored.get(grant.grant_id)
        if expected != grant.remaining:
            drift.append(
                Drift(wallet_id, f"grant {grant.grant_id} remaining", expected, grant.remaining)
            )
    drift += [
        Drift(wallet_id, f"grant {grant_id}", f"remaining {remaining}", "absent from hot state")
        for grant_id, remaining in stored.items()
        if remaining and grant_id not in seen
    ]
    return drift


async def _hold_drift(conn: Queryable, hot: HotState, wallet_id: str, now_ms: int) -> list[Drift]:
    rows = await conn.fetch(
        """SELECT hold_id, authorized, debited FROM holds
           WHERE wallet_id = $1 AND state = 'open'""",
        wallet_id,
    )
    drift: list[Drift] = []
    for row in rows:
        expected = f"open, {row['authorized']} authorized, {row['debited']} debited"
        try:
            hold = await hot.hold(wallet_id, row["hold_id"], now_ms)
        except UnknownHold:
            drift.append(Drift(wallet_id, f"hold {row['hold_id']}", expected, "absent"))
            continue
        found = f"{hold.state.value}, {hold.authorized} authorized, {hold.debited} debited"
        if hold.state is not HoldState.OPEN or found != expected:
            drift.append(Drift(wallet_id, f"hold {row['hold_id']}", expected, found))
    return drift


async def reconcile(
    pool: asyncpg.Pool[asyncpg.Record],
    *,
    hot: HotState | None,
    now_ms: int,
    backlog: Mapping[int, int] | None = None,
    wallet_ids: Iterable[str] | None = None,
) -> Report:
    """Check every wallet (or those given). `backlog` maps partition -> unwritten stream
    messages: a wallet ahead in Redis is *lagging* when its partition has a backlog."""
    report = Report()
    ids = list(wallet_ids) if wallet_ids is not None else None
    rows = await pool.fetch(
        """SELECT wallet_id, partition FROM wallets
           WHERE $1::text[] IS NULL OR wallet_id = ANY($1::text[]) ORDER BY wallet_id""",
        ids,
    )
    for row in rows:
        wallet_id = row["wallet_id"]
        report.wallets_checked += 1
        report.drift += await ledger_drift(pool, wallet_id)
        if hot is None:
            continue
        drift, ahead = await hot_drift(pool, hot, wallet_id, now_ms)
        report.drift += drift
        if ahead:
            if (backlog or {}).get(row["partition"], 0) > 0:
                report.lagging.append(wallet_id)
            else:
                report.drift.append(
                    Drift(wallet_id, "version", "written behind", "hot state newer, no backlog")
                )
    if ids is None:
        report.drift += [
            Drift("", f"sum of all {asset} lines", 0, total)
            for asset, total in (await unbalanced_assets(pool)).items()
        ]
    return report

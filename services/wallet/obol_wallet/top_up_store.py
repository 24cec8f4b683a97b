"""Postgres storage of auto top-up: rules, attempts and wallet events (migrations 0005,
0006).

Used by the gRPC edge (SetAutoTopUpRule and friends), by the Postgres backend, whose
spends read and change these rows inside their own transaction, by the top-up worker,
which records each attempt before it is charged and what became of it (for either
backend), and by `obol rebuild`, which restores the attempt in flight (`resume_attempt`).
Callers pass a connection inside their transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from obol_core.postgres import Queryable

from .model import (
    TopUpAttempt,
    TopUpDisabledReason,
    TopUpRule,
    TopUpStatus,
    WalletEvent,
)

_RULE_COLUMNS = (
    "wallet_id, threshold, amount, top_up_to, payment_method_id, max_failures, enabled,"
    " disabled_reason, disabled_message, consecutive_failures, next_attempt_ms, deleted,"
    " version, created_ms, updated_ms"
)


@dataclass(frozen=True)
class RuleSpec:
    """What SetAutoTopUpRule sets (amounts in the wallet's asset)."""

    threshold: int
    amount: int  # 0 when top_up_to is set
    top_up_to: int  # 0 when amount is set
    payment_method_id: str
    max_failures: int
    enabled: bool


@dataclass(frozen=True)
class TopUpHistory:
    """The latest attempt of a wallet (for the rule's status)."""

    last_attempt_ms: int  # 0: none yet
    last_state: str  # '', 'pending', 'succeeded' or 'failed'
    last_error: str
    last_grant_id: str  # of the latest successful attempt


def _rule(row: asyncpg.Record) -> TopUpRule:
    return TopUpRule(
        wallet_id=row["wallet_id"],
        threshold=row["threshold"],
        amount=row["amount"],
        top_up_to=row["top_up_to"],
        payment_method_id=row["payment_method_id"],
        max_failures=row["max_failures"],
        enabled=row["enabled"],
        disabled_reason=TopUpDisabledReason(row["disabled_reason"]),
        disabled_message=row["disabled_message"],
        consecutive_failures=row["consecutive_failures"],
        next_attempt_ms=row["next_attempt_ms"],
        deleted=row["deleted"],
        version=row["version"],
        created_ms=row["created_ms"],
        updated_ms=row["updated_ms"],
    )


# ---- rules ----


async def get_rule(conn: Queryable, wallet_id: str) -> TopUpRule | None:
    """The wallet's rule, deleted or not; None if it never had one."""
    row = await conn.fetchrow(
        f"SELECT {_RULE_COLUMNS} FROM auto_topup_rules WHERE wallet_id = $1", wallet_id
    )
    return None if row is None else _rule(row)


async def live_rule(conn: Queryable, wallet_id: str) -> tuple[TopUpRule, bool] | None:
    """The wallet's rule (not deleted) and whether an attempt is pending; for the Postgres
    backend, which holds the wallet's row lock (every change of these rows takes it)."""
    row = await conn.fetchrow(
        f"""SELECT {_RULE_COLUMNS}, EXISTS (
                SELECT 1 FROM auto_topup_attempts a
                WHERE a.wallet_id = $1 AND a.state = 'pending') AS pending
            FROM auto_topup_rules WHERE wallet_id = $1 AND NOT deleted""",
        wallet_id,
    )
    return None if row is None else (_rule(row), row["pending"])


async def put_rule(conn: Queryable, wallet_id: str, spec: RuleSpec, now_ms: int) -> TopUpRule:
    """Create or replace the rule: a new version with a fresh status. An enabled rule is
    due at once (the worker looks at the wallet now: a balance already below the threshold
    starts an attempt without waiting for a spend)."""
    row = await conn.fetchrow(
        f"""INSERT INTO auto_topup_rules (wallet_id, threshold, amount, top_up_to,
                payment_method_id, max_failures, enabled, disabled_reason, next_attempt_ms,
                created_ms, updated_ms)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
            ON CONFLICT (wallet_id) DO UPDATE SET
                threshold = EXCLUDED.threshold, amount = EXCLUDED.amount,
                top_up_to = EXCLUDED.top_up_to, payment_method_id = EXCLUDED.payment_method_id,
                max_failures = EXCLUDED.max_failures, enabled = EXCLUDED.enabled,
                disabled_reason = EXCLUDED.disabled_reason, disabled_message = '',
                consecutive_failures = 0, next_attempt_ms = EXCLUDED.next_attempt_ms,
                deleted = false, version = auto_topup_rules.version + 1,
                created_ms = CASE WHEN auto_topup_rules.deleted THEN EXCLUDED.created_ms
                                  ELSE auto_topup_rules.created_ms END,
                updated_ms = EXCLUDED.updated_ms
            RETURNING {_RULE_COLUMNS}""",
        wallet_id,
        spec.threshold,
        spec.amount,
        spec.top_up_to,
        spec.payment_method_id,
        spec.max_failures,
        spec.enabled,
        "" if spec.enabled else TopUpDisabledReason.OPERATOR.value,
        now_ms if spec.enabled else 0,
        now_ms,
    )
    assert row is not None
    return _rule(row)


async def delete_rule(conn: Queryable, wallet_id: str, now_ms: int) -> TopUpRule | None:
    """Delete the rule (kept as a disabled, deleted row so versions keep growing); None if
    there is none. An attempt in flight is left to complete."""
    row = await conn.fetchrow(
        f"""UPDATE auto_topup_rules SET deleted = true, enabled = false,
                disabled_reason = 'operator', disabled_message = '', next_attempt_ms = 0,
                version = version + 1, updated_ms = $2
            WHERE wallet_id = $1 AND NOT deleted
            RETURNING {_RULE_COLUMNS}""",
        wallet_id,
        now_ms,
    )
    return None if row is None else _rule(row)


async def schedule_rule(conn: Queryable, wallet_id: str, next_attempt_ms: int) -> None:
    """Postgres backend: when the rule may next start an attempt (0: at any spend)."""
    await conn.execute(
        "UPDATE auto_topup_rules SET next_attempt_ms = $2 WHERE wallet_id = $1",
        wallet_id,
        next_attempt_ms,
    )


async def due_rules(conn: Queryable, now_ms: int, limit: int) -> list[str]:
    """Postgres backend: wallets whose rule is due for a look (a retry, a new rule)."""
    rows = await conn.fetch(
        """SELECT wallet_id FROM auto_topup_rules
           WHERE enabled AND next_attempt_ms > 0 AND next_attempt_ms <= $1
           ORDER BY next_attempt_ms LIMIT $2""",
        now_ms,
        limit,
    )
    return [row["wallet_id"] for row in rows]


async def record_status(
    conn: Queryable, wallet_id: str, status: TopUpStatus, disabled_message: str, now_ms: int
) -> None:
    """Copy a rule's status after a failure (as the backend's atomic step left it) into its
    row, unless the rule changed since (another version: Set or Delete decided anew). An
    empty `disabled_message` keeps the stored one."""
    await conn.execute(
        """UPDATE auto_topup_rules SET consecutive_failures = $3, next_attempt_ms = $4,
               enabled = $5, disabled_reason = $6,
               disabled_message = CASE WHEN $6 = '' THEN '' WHEN $7 = '' THEN disabled_message
                                       ELSE $7 END,
               updated_ms = $8
           WHERE wallet_id = $1 AND version = $2""",
        wallet_id,
        status.rule_version,
        status.consecutive_failures,
        status.next_attempt_ms,
        status.enabled,
        status.disabled_reason.value,
        disabled_message,
        now_ms,
    )


async def history(conn: Queryable, wallet_id: str) -> TopUpHistory:
    row = await conn.fetchrow(
        """SELECT a.created_ms, a.state, a.error,
                  (SELECT s.grant_id FROM auto_topup_attempts s
                   WHERE s.wallet_id = $1 AND s.state = 'succeeded'
                   ORDER BY s.seq DESC LIMIT 1) AS last_grant_id
           FROM auto_topup_attempts a WHERE a.wallet_id = $1
           ORDER BY a.seq DESC LIMIT 1""",
        wallet_id,
    )
    if row is None:
        return TopUpHistory(0, "", "", "")
    return TopUpHistory(row["created_ms"], row["state"], row["error"], row["last_grant_id"] or "")


# ---- attempts ----


def attempt_seq(attempt_id: str) -> int:
    """The ledger sequence an attempt id ends with (`<wallet>:<seq>`)."""
    return int(attempt_id.rpartition(":")[2])


async def insert_attempt(conn: Queryable, attempt: TopUpAttempt) -> bool:
    """Record an attempt as pending unless a rebuild fenced its wallet at or above its seq
    (migration 0006); a repeat is ignored. True if this inserted it. Two pending attempts of
    one wallet violate auto_topup_attempts_one_pending: exactly one at a time."""
    inserted: bool | None = await conn.fetchval(
        """INSERT INTO auto_topup_attempts (attempt_id, wallet_id, seq, amount,
               payment_method_id, state, created_ms)
           SELECT $1, $2, $3, $4, $5, 'pending', $6
           WHERE NOT EXISTS (SELECT 1 FROM auto_topup_fences f
                             WHERE f.wallet_id = $2 AND f.seq >= $3)
           ON CONFLICT (attempt_id) DO NOTHING
           RETURNING true""",
        attempt.attempt_id,
        attempt.wallet_id,
        attempt_seq(attempt.attempt_id),
        attempt.amount,
        attempt.payment_method_id,
        attempt.created_ms,
    )
    return bool(inserted)


def _attempts_lock_key(wallet_id: str) -> int:
    """The advisory lock of a wallet's attempts (a signed 64-bit key)."""
    digest = hashlib.sha256(f"obol.auto_topup:{wallet_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _lock_attempts(conn: Queryable, wallet_id: str) -> None:
    """Held to the end of the transaction: the worker recording an attempt and a rebuild
    fencing the wallet (resume_attempt) never miss each other."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _attempts_lock_key(wallet_id))


async def record_attempt(pool: asyncpg.Pool[asyncpg.Record], attempt: TopUpAttempt) -> bool:
    """The worker, before it charges anything: record the attempt as pending (a repeat is
    ignored) and say whether it may run. False for a void attempt: it is not recorded and
    a rebuild fenced its wallet at or above its seq since, so it was lost with the hot
    state and the rebuilt wallet does not know it (it must never be charged; see
    migration 0006). Two pending attempts of one wallet violate
    auto_topup_attempts_one_pending (UniqueViolation): exactly one at a time."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_attempts(conn, attempt.wallet_id)
        if await insert_attempt(conn, attempt):
            return True
        return bool(
            await conn.fetchval(
                "SELECT true FROM auto_topup_attempts WHERE attempt_id = $1", attempt.attempt_id
            )
        )


async def attempt_grant(conn: Queryable, wallet_id: str, attempt_id: str) -> str | None:
    """The grant that paid out the attempt, if its entry is in the ledger (a TOP_UP entry
    whose request_id is the attempt id, after the entry that started the attempt)."""
    prefix = f"wallet:{wallet_id}:grant:"
    grant_id: str | None = await conn.fetchval(
        """SELECT substr(l.account, length($3) + 1)
           FROM ledger_entries e JOIN ledger_lines l USING (entry_id)
           WHERE e.wallet_id = $1 AND e.seq > $4 AND e.request_id = $2 AND e.kind = 'top_up'
             AND starts_with(l.account, $3) AND l.amount > 0
           ORDER BY e.seq LIMIT 1""",
        wallet_id,
        attempt_id,
        prefix,
        attempt_seq(attempt_id),
    )
    return grant_id


async def resume_attempt(
    pool: asyncpg.Pool[asyncpg.Record], wallet_id: str, seq: int, now_ms: int
) -> TopUpAttempt | None:
    """For `obol rebuild`, before it hydrates a wallet whose hot state was lost, `seq`
    being the wallet's ledger sequence in Postgres: the attempt to restore as pending.

    Fences the wallet at `seq` (attempts up to it that are not recorded are void from now
    on, see record_attempt), then returns the attempt recorded as pending, if any, unless
    its grant already reached the ledger: that one is marked succeeded here (its worker
    stopped between the grant and the row) and None is returned, since restoring it would
    leave it pending for ever (the grant's replay does not clear it again)."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_attempts(conn, wallet_id)
        await conn.execute(
            """INSERT INTO auto_topup_fences (wallet_id, seq, fenced_ms) VALUES ($1, $2, $3)
               ON CONFLICT (wallet_id) DO UPDATE SET
                   seq = GREATEST(auto_topup_fences.seq, EXCLUDED.seq),
                   fenced_ms = EXCLUDED.fenced_ms""",
            wallet_id,
            seq,
            now_ms,
        )
        row = await conn.fetchrow(
            """SELECT a.attempt_id, a.wallet_id, w.asset_code, a.amount, a.payment_method_id,
                      a.created_ms
               FROM auto_topup_attempts a JOIN wallets w USING (wallet_id)
               WHERE a.wallet_id = $1 AND a.state = 'pending'""",
            wallet_id,
        )
        if row is None:
            return None
        grant_id = await attempt_grant(conn, wallet_id, row["attempt_id"])
        if grant_id is not None:
            await attempt_paid(conn, wallet_id, row["attempt_id"], grant_id, now_ms)
            return None
        return TopUpAttempt(
            attempt_id=row["attempt_id"],
            wallet_id=row["wallet_id"],
            asset_code=row["asset_code"],
            amount=row["amount"],
            payment_method_id=row["payment_method_id"],
            created_ms=row["created_ms"],
        )


async def claim_attempts(
    conn: Queryable, now_ms: int, lease_ms: int, limit: int
) -> list[TopUpAttempt]:
    """Postgres backend: pending attempts nobody holds, each leased until now + lease_ms
    (a worker that dies lets its lease run out; then another takes the attempt again)."""
    rows = await conn.fetch(
        """UPDATE auto_topup_attempts a SET claimed_until_ms = $2
           FROM wallets w
           WHERE w.wallet_id = a.wallet_id AND a.attempt_id IN (
               SELECT attempt_id FROM auto_topup_attempts
               WHERE state = 'pending' AND claimed_until_ms <= $1
               ORDER BY created_ms LIMIT $3
               FOR UPDATE SKIP LOCKED)
           RETURNING a.attempt_id, a.wallet_id, w.asset_code, a.amount,
                     a.payment_method_id, a.created_ms""",
        now_ms,
        now_ms + lease_ms,
        limit,
    )
    return [
        TopUpAttempt(
            attempt_id=row["attempt_id"],
            wallet_id=row["wallet_id"],
            asset_code=row["asset_code"],
            amount=row["amount"],
            payment_method_id=row["payment_method_id"],
            created_ms=row["created_ms"],
        )
        for row in rows
    ]


async def attempt_paid(
    conn: Queryable, wallet_id: str, attempt_id: str, grant_id: str, now_ms: int
) -> None:
    """The attempt's grant was added: it succeeded and the rule's failures start over."""
    done = await conn.fetchval(
        """UPDATE auto_topup_attempts SET state = 'succeeded', grant_id = $2, finished_ms = $3
           WHERE attempt_id = $1 AND state = 'pending' RETURNING true""",
        attempt_id,
        grant_id,
        now_ms,
    )
    if done:
        await conn.execute(
            """UPDATE auto_topup_rules SET consecutive_failures = 0, updated_ms = $2
               WHERE wallet_id = $1""",
            wallet_id,
            now_ms,
        )


async def attempt_failed(conn: Queryable, attempt_id: str, error: str, now_ms: int) -> bool:
    """Mark a pending attempt failed; False if it was not pending (a repeat)."""
    done = await conn.fetchval(
        """UPDATE auto_topup_attempts SET state = 'failed', error = $2, finished_ms = $3
           WHERE attempt_id = $1 AND state = 'pending' RETURNING true""",
        attempt_id,
        error,
        now_ms,
    )
    return bool(done)


# ---- events ----


async def insert_events(conn: Queryable, events: Iterable[WalletEvent]) -> None:
    """Record events; one already recorded (same event_id) is kept as it is."""
    items = list(events)
    if not items:
        return
    await conn.execute(
        """INSERT INTO wallet_events (event_id, wallet_id, kind, occurred_ms, data)
           SELECT e.id, e.w, e.kind, e.at, e.data::jsonb
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
                AS e(id, w, kind, at, data)
           ON CONFLICT (event_id) DO NOTHING""",
        [e.event_id for e in items],
        [e.wallet_id for e in items],
        [e.kind.value for e in items],
        [e.occurred_ms for e in items],
        [json.dumps(dict(e.data), sort_keys=True) for e in items],
    )

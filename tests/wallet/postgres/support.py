"""Helpers shared by the Postgres-side wallet suites: a migrated database, rows inserted
directly (customer, asset USD with 9 decimals, wallets), and ledger stream messages built
by hand in exactly the documented format (docs/wallet.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import asyncpg

from obol_core.ids import new_id
from obol_core.postgres import apply_migrations, create_pool
from obol_wallet.partitions import partition_of
from obol_wallet.schema import MIGRATIONS_DIR, SCHEMA

PARTITIONS = 8
USD = "USD"
DOLLAR = 1_000_000_000
START_MS = 1_800_000_000_000


@asynccontextmanager
async def migrated_pool(dsn: str, *, max_size: int = 10) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(dsn, search_path=SCHEMA, min_size=1, max_size=max_size)
    try:
        await apply_migrations(pool, schema=SCHEMA, migrations=MIGRATIONS_DIR)
        await pool.execute(
            "INSERT INTO assets (asset_code, kind, decimals) VALUES ($1, 'currency', 9)", USD
        )
        yield pool
    finally:
        await pool.close()


async def new_wallet(
    pool: asyncpg.Pool, *, overdraft: int = 0, partitions: int = PARTITIONS
) -> str:
    customer_id = new_id("cus")
    wallet_id = new_id("wal")
    await pool.execute(
        "INSERT INTO customers (customer_id, external_id) VALUES ($1, $1)", customer_id
    )
    await pool.execute(
        """INSERT INTO wallets (wallet_id, customer_id, asset_code, partition, overdraft_limit)
           VALUES ($1, $2, $3, $4, $5)""",
        wallet_id,
        customer_id,
        USD,
        partition_of(wallet_id, partitions),
        overdraft,
    )
    return wallet_id


def entry_json(
    entry_id: str,
    seq: int,
    kind: str,
    lines: Sequence[tuple[str, str, int]] = (),
    *,
    rid: str = "",
    at: int = START_MS,
    memo: Mapping[str, str] | None = None,
) -> dict[str, object]:
    return {
        "id": entry_id,
        "seq": str(seq),
        "kind": kind,
        "rid": rid,
        "at": str(at),
        "memo": json.dumps(dict(memo or {})),
        "lines": [[account, asset, str(amount)] for account, asset, amount in lines],
    }


def grant_json(
    grant_id: str,
    amount: int,
    remaining: int,
    version: int,
    *,
    kind: str = "purchased",
    expired: bool = False,
    effective: int = START_MS,
    expires: int = 0,
) -> dict[str, str]:
    return {
        "id": grant_id,
        "kind": kind,
        "amount": str(amount),
        "remaining": str(remaining),
        "refunded": "0",
        "priority": "100",
        "effective": str(effective),
        "expires": str(expires),
        "created": str(START_MS),
        "expired": "1" if expired else "0",
        "version": str(version),
    }


def hold_json(
    hold_id: str, authorized: int, state: str, version: int, *, captured: int = 0, rid: str = ""
) -> dict[str, str]:
    return {
        "id": hold_id,
        "state": state,
        "authorized": str(authorized),
        "debited": "0",
        "captured": str(captured),
        "expires": str(START_MS + 60_000),
        "created": str(START_MS),
        "closed": "" if state == "open" else str(START_MS + 1),
        "rid": rid,
        "version": str(version),
    }


def wallet_json(active: int, held: int, seq: int, version: int, *, od: int = 0) -> dict[str, str]:
    return {
        "asset": USD,
        "active": str(active),
        "od": str(od),
        "held": str(held),
        "frozen": "0",
        "limit": "0",
        "seq": str(seq),
        "version": str(version),
    }


def message(
    op: str,
    wallet_id: str,
    *,
    rid: str = "",
    now: int = START_MS,
    entries: Sequence[Mapping[str, object]] = (),
    grants: Sequence[Mapping[str, str]] = (),
    holds: Sequence[Mapping[str, str]] = (),
    wallet: Mapping[str, str],
    result: str = "{}",
) -> dict[str, str]:
    """The flat string fields of one `XADD {pN}:ledger` message."""
    return {
        "op": op,
        "w": wallet_id,
        "rid": rid,
        "now": str(now),
        # As Lua's cjson writes an empty array: {}
        "entries": json.dumps(list(entries)) if entries else "{}",
        "grants": json.dumps(list(grants)) if grants else "{}",
        "holds": json.dumps(list(holds)) if holds else "{}",
        "wallet": json.dumps(dict(wallet)),
        "hash": f"hash-{rid}" if rid else "",
        "result": result if rid else "",
    }

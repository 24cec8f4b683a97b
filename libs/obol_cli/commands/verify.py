"""`obol verify [--wallet W]`: recompute the ledger's hash chains in Postgres.

For each wallet (or the ones named), every entry's hash must cover its content and the
previous entry's hash, sequences must follow each other, each entry's lines must sum to
zero per asset, and the chain must end at the wallet's recorded head. Exits 1 naming the
first bad entry of each broken chain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from obol_core.postgres import create_pool
from obol_wallet.schema import SCHEMA

from ..errors import ObolCliError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "verify",
        help="verify the ledger's hash chains",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_option(parser)
    parser.add_argument(
        "--wallet", action="append", default=[], help="only this wallet (repeatable)"
    )
    parser.set_defaults(handler=verify)


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="Postgres DSN (default: $DATABASE_URL)",
    )


@asynccontextmanager
async def wallet_pool(database_url: str | None) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    """A small pool on the wallet service's schema."""
    if not database_url:
        raise ObolCliError("no database: set DATABASE_URL or pass --database-url")
    try:
        pool = await create_pool(
            database_url, min_size=1, max_size=4, application_name="obol", search_path=SCHEMA
        )
    except (OSError, asyncpg.PostgresError) as err:
        raise ObolCliError(f"cannot connect to the database: {err}") from None
    try:
        yield pool
    finally:
        await pool.close()


async def wallet_ids(pool: asyncpg.Pool[asyncpg.Record], wanted: list[str]) -> list[str]:
    """The wallets named (all must exist), or every wallet."""
    rows = await pool.fetch(
        """SELECT wallet_id FROM wallets
           WHERE cardinality($1::text[]) = 0 OR wallet_id = ANY($1::text[])
           ORDER BY wallet_id""",
        wanted,
    )
    found = [row["wallet_id"] for row in rows]
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ObolCliError(f"no such wallet: {', '.join(missing)}")
    return found


def verify(args: argparse.Namespace) -> int:
    return asyncio.run(_verify(args.database_url, args.wallet))


async def _verify(database_url: str | None, wanted: list[str]) -> int:
    # Imported here, not at the top: `obol` must start (e.g. `obol migrate`) without
    # loading every service's code.
    from obol_wallet.ledger_queries import verify_chain

    broken = entries = 0
    async with wallet_pool(database_url) as pool:
        ids = await wallet_ids(pool, wanted)
        for wallet_id in ids:
            result = await verify_chain(pool, wallet_id)
            entries += result.entries_checked
            if not result.valid:
                broken += 1
                entry = result.first_invalid_entry_id or "-"
                print(
                    f"obol: wallet {wallet_id}: BROKEN at seq {result.first_invalid_seq} "
                    f"(entry {entry}): {result.problem}",
                    flush=True,
                )
    verdict = f"{broken} broken" if broken else "all intact"
    print(f"obol: verified {len(ids)} wallets, {entries} entries: {verdict}")
    return 1 if broken else 0

"""WatchTransactions: ledger entries streamed as they are recorded in Postgres.

At-least-once, in recording order, resumable with a cursor (the recording time of the last
entry sent). Entries are recorded by concurrent transactions whose `recorded_at` is their
start time, so one that commits late can carry an earlier time than entries already sent:
each poll therefore looks back `LOOKBACK` before the cursor and skips what it already sent.
A transaction open longer than the look-back could be missed; the write-behind's and the
baseline's transactions last milliseconds. Clients deduplicate by transaction id.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

from obol_core.errors import InvalidArgument
from obol_core.postgres import Queryable

from . import ledger_queries
from .ledger_queries import Transaction
from .model import EntryKind

POLL_INTERVAL_SECONDS = 0.2
LOOKBACK = timedelta(seconds=5)
_PAGE = 500


def encode_cursor(recorded_at: datetime) -> str:
    return base64.urlsafe_b64encode(recorded_at.isoformat().encode()).decode()


def decode_cursor(cursor: str) -> datetime:
    try:
        return datetime.fromisoformat(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError) as err:
        raise InvalidArgument.for_field("after_cursor", "is not a cursor this API issued") from err


async def watch_transactions(
    conn: Queryable,
    *,
    since: datetime | None,
    kinds: Sequence[EntryKind],
    customer_id: str,
    with_lines: bool,
    interval_seconds: float = POLL_INTERVAL_SECONDS,
) -> AsyncIterator[Transaction]:
    cursor = since or datetime.now(UTC)
    sent: dict[str, datetime] = {}  # entry id -> recorded_at, for the look-back window
    while True:
        page = await ledger_queries.transactions_posted_since(
            conn,
            cursor - LOOKBACK,
            kinds=kinds,
            customer_id=customer_id,
            limit=_PAGE + len(sent),
            with_lines=with_lines,
        )
        fresh = [t for t in page if t.entry.entry_id not in sent]
        for transaction in fresh:
            sent[transaction.entry.entry_id] = transaction.recorded_at
            cursor = max(cursor, transaction.recorded_at)
            yield transaction
        horizon = cursor - LOOKBACK
        sent = {entry: at for entry, at in sent.items() if at >= horizon}
        if len(fresh) < _PAGE:
            await asyncio.sleep(interval_seconds)

"""The read side of wallet events (`wallet_events`, migration 0005): a wallet's balance
alerts and auto top-up outcomes, filtered and keyset-paginated, newest first.

Events are recorded in Postgres on both backends (top_up_store.insert_events: by the
Postgres backend in the transaction of what they report; on Redis by the auto top-up
worker from the partition's `{p}:topups` stream), so this reads Postgres only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from obol_core.errors import InvalidArgument
from obol_core.postgres import Queryable

from .model import WalletEvent, WalletEventKind


@dataclass(frozen=True)
class EventFilter:
    wallet_id: str
    kinds: Sequence[WalletEventKind] = ()  # empty: every kind
    start_ms: int | None = None  # occurred_ms >= start_ms
    end_ms: int | None = None  # occurred_ms < end_ms


def page_key(event: WalletEvent) -> str:
    """The keyset position of an event, for `list_events(after=...)`."""
    return f"{event.occurred_ms}:{event.event_id}"


def _parse_key(after: str) -> tuple[int, str]:
    # Event ids contain ':' themselves; the position's millis never do.
    millis, separator, event_id = after.partition(":")
    if not separator or not millis.isdigit() or not event_id:
        raise InvalidArgument.for_field("page_token", "is not a token this API issued")
    return int(millis), event_id


def _data(raw: str) -> dict[str, str]:
    """The stored data: a JSON object of strings (amounts as decimal integer strings)."""
    decoded = json.loads(raw)
    return {
        str(name): value if isinstance(value, str) else json.dumps(value)
        for name, value in decoded.items()
    }


def _event(row: asyncpg.Record) -> WalletEvent:
    return WalletEvent(
        event_id=row["event_id"],
        wallet_id=row["wallet_id"],
        kind=WalletEventKind(row["kind"]),
        occurred_ms=row["occurred_ms"],
        data=_data(row["data"]),
    )


async def list_events(
    conn: Queryable, where: EventFilter, *, limit: int, after: str | None = None
) -> list[WalletEvent]:
    """Up to `limit` events of the wallet matching `where`, newest first (ties by event
    id, descending), after the `page_key` given."""
    after_ms, after_id = _parse_key(after) if after else (None, None)
    rows = await conn.fetch(
        """SELECT event_id, wallet_id, kind, occurred_ms, data::text AS data
           FROM wallet_events
           WHERE wallet_id = $1
             AND (cardinality($2::text[]) = 0 OR kind = ANY($2::text[]))
             AND ($3::bigint IS NULL OR occurred_ms >= $3)
             AND ($4::bigint IS NULL OR occurred_ms < $4)
             AND ($5::bigint IS NULL OR (occurred_ms, event_id) < ($5, $6::text))
           ORDER BY occurred_ms DESC, event_id DESC
           LIMIT $7""",
        where.wallet_id,
        [kind.value for kind in where.kinds],
        where.start_ms,
        where.end_ms,
        after_ms,
        after_id,
        limit,
    )
    return [_event(row) for row in rows]

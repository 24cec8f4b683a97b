"""Apply decoded stream messages to Postgres, inside the caller's transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from obol_core.postgres import Queryable

from .. import ledger_store
from ..ledger_store import WalletRequest
from ..redis_backend.codec import StreamMessage


def partition_lock_key(partition: int) -> int:
    """The advisory lock serializing writers of one partition (a signed 64-bit key)."""
    digest = hashlib.sha256(f"obol.writebehind:{partition}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def apply_messages(
    conn: Queryable, partitions: Iterable[int], messages: Sequence[StreamMessage]
) -> int:
    """Write the messages of `partitions` (in stream order per partition); returns the
    number of entries newly inserted.

    Takes the partitions' advisory locks (held to the end of the transaction, in a fixed
    order) so two workers never interleave a partition's chains, then the wallets' row
    locks. A wallet lives in one partition, so its chain is in order whatever the mix.
    """
    for partition in sorted(set(partitions)):
        await conn.execute("SELECT pg_advisory_xact_lock($1)", partition_lock_key(partition))
    if not messages:
        return 0
    heads = await ledger_store.lock_chain_heads(conn, (m.wallet_id for m in messages))
    chained = ledger_store.chain_entries((e for m in messages for e in m.entries), heads)
    await ledger_store.insert_entries(conn, chained)
    touched = {c.entry.wallet_id for c in chained}
    await ledger_store.save_chain_heads(conn, {w: heads[w] for w in touched})
    await ledger_store.upsert_grants(conn, (g for m in messages for g in m.grants))
    await ledger_store.upsert_holds(conn, (h for m in messages for h in m.holds))
    await ledger_store.update_wallets(conn, (m.wallet for m in messages))
    await ledger_store.record_requests(
        conn, (WalletRequest(m.wallet_id, m.request) for m in messages if m.request)
    )
    return len(chained)

"""Write-behind figures: lag of the ledger streams, draining, and the final audit that
every ledger entry made on the Redis side is in Postgres exactly once.

The worker XACKs and XDELs a message in one step after COMMIT (see
obol_wallet/writebehind/worker.py), so a partition's stream holds exactly its unwritten
messages: XLEN is the backlog and the first id's timestamp dates the oldest one. Stream
ids are Redis server milliseconds, so ages are taken against Redis TIME.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from obol_core.postgres import create_pool
from obol_core.redis import RedisClient
from obol_wallet.partitions import WalletKeys, keys_for
from obol_wallet.schema import SCHEMA

_CHUNK = 2000


@dataclass(frozen=True)
class LagSample:
    at: float  # time.monotonic() of the sample
    backlog: int  # unwritten messages, all partitions
    oldest_age_ms: float  # age of the oldest unwritten message (0 when none)


async def sample_lag(client: RedisClient, partitions: int) -> LagSample:
    at = time.monotonic()
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for partition in range(partitions):
        key = WalletKeys(partition, "").ledger
        pipe.xlen(key)
        pipe.xrange(key, "-", "+", count=1)
    replies = await pipe.execute()
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) / 1000
    backlog = 0
    oldest: float | None = None
    for index in range(partitions):
        backlog += int(replies[1 + 2 * index])
        first = replies[2 + 2 * index]
        if first:
            stamp = int(first[0][0].split(b"-")[0])
            oldest = stamp if oldest is None else min(oldest, stamp)
    return LagSample(at, backlog, 0.0 if oldest is None else max(0.0, now_ms - oldest))


@dataclass
class LagSampler:
    """Samples lag every `interval` seconds until stopped (at most `max_samples`)."""

    client: RedisClient
    partitions: int
    interval: float
    max_samples: int
    samples: list[LagSample] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        for _ in range(self.max_samples):
            self.samples.append(await sample_lag(self.client, self.partitions))
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
                return
            except TimeoutError:
                continue

    def stop(self) -> None:
        self._stop.set()


async def drain(
    client: RedisClient, partitions: int, limit_seconds: float
) -> tuple[bool, float, int]:
    """Wait until every stream is empty: (drained, seconds waited, backlog left)."""
    started = time.monotonic()
    backlog = 0
    while time.monotonic() - started < limit_seconds:
        backlog = (await sample_lag(client, partitions)).backlog
        if backlog == 0:
            return True, time.monotonic() - started, 0
        await asyncio.sleep(0.2)
    return False, time.monotonic() - started, backlog


@dataclass(frozen=True)
class Audit:
    wallets: int
    produced: int  # ledger entries made on the Redis side (sum of wallets' `seq`)
    stored: int  # ledger entries of those wallets in Postgres
    lost: int  # produced but not in Postgres
    extra: int  # in Postgres beyond what Redis produced (seq out of range)
    duplicate_requests: int  # entries beyond the first of a (wallet, request_id)
    entries_with_request_id: int
    requests_checked: int  # request_ids the load got OK answers for
    requests_missing: int  # of those, with no ledger entry in Postgres


_AUDIT_SQL = """
WITH r AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS r(wallet_id, seq))
SELECT
    coalesce(sum(r.seq), 0)::bigint AS produced,
    (SELECT count(*) FROM ledger_entries e JOIN r USING (wallet_id))::bigint AS stored,
    coalesce(sum(r.seq - (SELECT count(DISTINCT e.seq) FROM ledger_entries e
                          WHERE e.wallet_id = r.wallet_id AND e.seq BETWEEN 1 AND r.seq)),
             0)::bigint AS lost,
    (SELECT count(*) FROM ledger_entries e JOIN r USING (wallet_id)
     WHERE e.seq < 1 OR e.seq > r.seq)::bigint AS extra
FROM r
"""

# Each mutation makes exactly one entry carrying its request_id (entries made while
# settling time carry none), so a (wallet, request_id) with two entries ran twice.
_DUPLICATES_SQL = """
SELECT coalesce(sum(n - 1), 0)::bigint FROM (
    SELECT count(*) AS n FROM ledger_entries WHERE request_id <> ''
    GROUP BY wallet_id, request_id
) g WHERE n > 1
"""


async def _redis_seqs(client: RedisClient, wallet_ids: Sequence[str], partitions: int) -> list[int]:
    seqs: list[int] = []
    for start in range(0, len(wallet_ids), _CHUNK):
        pipe = client.pipeline(transaction=False)
        for wallet_id in wallet_ids[start : start + _CHUNK]:
            pipe.hget(keys_for(wallet_id, partitions).wallet, "seq")
        seqs += [int(value or 0) for value in await pipe.execute()]
    return seqs


async def audit(
    client: RedisClient, database_url: str, partitions: int, request_ids: Sequence[str]
) -> Audit:
    """Compare, wallet by wallet, what Redis made with what Postgres holds (call after a
    drain). Wallets are every wallet of the database."""
    pool: asyncpg.Pool[asyncpg.Record] = await create_pool(
        database_url, search_path=SCHEMA, max_size=2, command_timeout=300
    )
    try:
        wallet_ids = [row["wallet_id"] for row in await pool.fetch("SELECT wallet_id FROM wallets")]
        seqs = await _redis_seqs(client, wallet_ids, partitions)
        row = await pool.fetchrow(_AUDIT_SQL, wallet_ids, seqs)
        assert row is not None
        duplicates = int(await pool.fetchval(_DUPLICATES_SQL))
        with_rid = int(
            await pool.fetchval("SELECT count(*) FROM ledger_entries WHERE request_id <> ''")
        )
        found = {
            r["request_id"]
            for r in await pool.fetch(
                "SELECT DISTINCT e.request_id FROM ledger_entries e"
                " JOIN unnest($1::text[]) AS r(request_id) USING (request_id)",
                list(request_ids),
            )
        }
    finally:
        await pool.close()
    return Audit(
        wallets=len(wallet_ids),
        produced=int(row["produced"]),
        stored=int(row["stored"]),
        lost=int(row["lost"]),
        extra=int(row["extra"]),
        duplicate_requests=duplicates,
        entries_with_request_id=with_rid,
        requests_checked=len(set(request_ids)),
        requests_missing=len(set(request_ids) - found),
    )

"""`obol rebuild`: rehydrate Redis from Postgres (the system of record).

Rebuild = Postgres state + unconsumed stream entries. A wallet whose hot state is missing
is refused by the service (fail closed) until this loads it: its settings and counters,
its grants with funds left, its open holds and its idempotency records younger than the
retention (OBOL_IDEMPOTENCY_TTL_SECONDS), its auto top-up rule, and the auto top-up
attempt that was in flight. Wallets that are hydrated are left alone.

The attempt in flight is the one Postgres holds as pending (the top-up worker records an
attempt before it charges the payment method): it is pending again in the rebuilt wallet
from the moment the wallet is served, so no spend starts a second one, and it is queued
again for the worker, which completes it exactly once (the payment and the grant are
idempotent on the attempt id). If its grant already reached the ledger, it is marked
succeeded instead. An attempt that never got that far was never charged: it is void (the
worker drops it uncharged), and the rule starts a new one if the balance still asks for
it. See docs/decisions.md D13.

While a partition's ledger stream still has unwritten messages, rebuild refuses: those
messages are part of the state. `--apply-stream` first writes them to Postgres (as the
write-behind would, taking over every pending message), then rebuilds; a wallet without
hot state makes no new messages, so nothing of it can be missed. The streams' consumer
groups (write-behind, top-up worker) are created where a lost Redis lost them. One
rebuild runs at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence

import asyncpg
from redis.exceptions import ResponseError

from obol_core.redis import RedisClient

from ..errors import ObolCliError
from .reconcile import add_redis_option, redis_client, stream_backlog
from .verify import add_database_option, wallet_ids, wallet_pool

REBUILD_CONSUMER = "obol-rebuild"
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"obol.rebuild").digest()[:8], "big", signed=True)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "rebuild",
        help="rehydrate Redis hot state from Postgres",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_option(parser)
    add_redis_option(parser)
    parser.add_argument(
        "--wallet", action="append", default=[], help="only this wallet (repeatable)"
    )
    parser.add_argument(
        "--apply-stream",
        action="store_true",
        help="first write unconsumed ledger stream messages to Postgres",
    )
    parser.set_defaults(handler=rebuild)


def rebuild(args: argparse.Namespace) -> int:
    return asyncio.run(_rebuild(args))


async def _rebuild(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `obol` must start (e.g. `obol migrate`) without
    # loading every service's code.
    from obol_wallet.settings import WalletSettings

    settings = WalletSettings.from_env()
    redis = redis_client(args.redis_url)
    try:
        async with wallet_pool(args.database_url) as pool:
            await rebuild_hot_state(
                pool,
                redis,
                partitions=settings.partitions,
                idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
                wanted=args.wallet,
                apply_stream=args.apply_stream,
                now_ms=time.time_ns() // 1_000_000,
            )
    finally:
        await redis.aclose()
    return 0


async def rebuild_hot_state(
    pool: asyncpg.Pool[asyncpg.Record],
    redis: RedisClient,
    *,
    partitions: int,
    idempotency_ttl_seconds: int,
    wanted: Sequence[str] = (),
    apply_stream: bool = False,
    now_ms: int,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> list[str]:
    """Rebuild the hot state of the `wanted` wallets (all if empty) that lack one; returns
    the wallets rebuilt. ObolCliError if the streams hold unwritten messages (without
    `apply_stream`) or another rebuild is running."""
    async with pool.acquire() as lock:
        if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
            raise ObolCliError("another `obol rebuild` is running; try again when it ends")
        try:
            return await _rebuild_locked(
                pool,
                redis,
                partitions=partitions,
                idempotency_ttl_seconds=idempotency_ttl_seconds,
                wanted=list(wanted),
                apply_stream=apply_stream,
                now_ms=now_ms,
                say=say,
            )
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def _rebuild_locked(
    pool: asyncpg.Pool[asyncpg.Record],
    redis: RedisClient,
    *,
    partitions: int,
    idempotency_ttl_seconds: int,
    wanted: list[str],
    apply_stream: bool,
    now_ms: int,
    say: Callable[[str], None],
) -> list[str]:
    from obol_wallet.ledger_queries import wallet_snapshot
    from obol_wallet.partitions import keys_for
    from obol_wallet.redis_backend import RedisBackend
    from obol_wallet.redis_backend.scripts import Scripts
    from obol_wallet.top_up_store import get_rule, resume_attempt
    from obol_wallet.writebehind import WriteBehind, WriteBehindError

    ids = await wallet_ids(pool, wanted)
    touched = sorted(
        {
            row["partition"]
            for row in await pool.fetch(
                "SELECT DISTINCT partition FROM wallets WHERE wallet_id = ANY($1::text[])", ids
            )
        }
    )
    backlog = {p: n for p, n in (await stream_backlog(redis, touched)).items() if n}
    if backlog and not apply_stream:
        listed = ", ".join(f"p{p}: {n}" for p, n in sorted(backlog.items()))
        raise ObolCliError(
            f"ledger streams still hold unwritten messages ({listed}); let the "
            "write-behind drain them, or pass --apply-stream"
        )
    if backlog:
        writer = WriteBehind(redis, pool, sorted(backlog), REBUILD_CONSUMER, claim_idle_ms=0)
        try:
            written = await writer.drain()
        except WriteBehindError as err:
            raise ObolCliError(str(err)) from None
        say(f"obol: wrote {written} stream messages to Postgres")
    await _create_groups(redis, partitions)
    hot = RedisBackend(
        redis, partitions=partitions, idempotency_ttl_seconds=idempotency_ttl_seconds
    )
    stage = Scripts(redis).hydrate_records
    since_ms = now_ms - idempotency_ttl_seconds * 1000
    rebuilt: list[str] = []
    for wallet_id in ids:
        if await hot.is_hydrated(wallet_id):
            continue
        snapshot = await wallet_snapshot(pool, wallet_id, requests_since_ms=since_ms)
        # The attempt in flight: fenced and read in Postgres, then staged in the wallet's
        # hash (and queued again) so that hydrate.lua makes it pending in the same call
        # that serves the wallet again (D13).
        attempt = await resume_attempt(pool, wallet_id, snapshot.seq, now_ms)
        keys = keys_for(wallet_id, partitions)
        record: list[str | int] = ["t", "", "", "", 0, "", 0]
        if attempt is not None:
            record = [
                "t",
                attempt.attempt_id,
                wallet_id,
                attempt.asset_code,
                attempt.amount,
                attempt.payment_method_id,
                attempt.created_ms,
            ]
        if not await stage([keys.wallet, keys.topups], record):
            continue  # hydrated meanwhile
        if not await hot.hydrate(snapshot, now_ms=now_ms):
            continue
        rule = await get_rule(pool, wallet_id)
        if rule is not None:  # the auto top-up rule lives in the hot state too
            await hot.mirror_top_up_rule(rule)
        rebuilt.append(wallet_id)
        say(f"obol: rebuilt {wallet_id}")
        if attempt is not None:
            say(f"obol: auto top-up attempt {attempt.attempt_id} is pending again")
    say(f"obol: {len(rebuilt)} of {len(ids)} wallets rebuilt, the others were hydrated")
    return rebuilt


async def _create_groups(redis: RedisClient, partitions: int) -> None:
    """The consumer groups of every partition's ledger stream (write-behind) and top-up
    stream (top-up worker), from the start of the stream, where missing (a Redis that
    lost everything lost them too; running workers also recreate them on NOGROUP, but the
    re-queued attempts must find a group whether or not a worker is running)."""
    from obol_wallet.partitions import WalletKeys
    from obol_wallet.redis_backend.top_ups import TOP_UP_GROUP
    from obol_wallet.writebehind import STREAM_GROUP

    for partition in range(partitions):
        keys = WalletKeys(partition, "")  # partition-wide keys: no wallet
        for key, group in ((keys.ledger, STREAM_GROUP), (keys.topups, TOP_UP_GROUP)):
            try:
                await redis.xgroup_create(key, group, id="0", mkstream=True)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

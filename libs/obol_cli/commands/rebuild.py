"""`obol rebuild`: rehydrate Redis from Postgres (the system of record).

Rebuild = Postgres state + unconsumed stream entries. A wallet whose hot state is missing
is refused by the service (fail closed) until this loads it: its settings and counters,
its grants with funds left, its open holds and its idempotency records younger than the
retention (OBOL_IDEMPOTENCY_TTL_SECONDS), and its auto top-up rule. Wallets that are
hydrated are left alone. An auto top-up attempt that was in flight when the hot state was
lost is not restored: if Redis itself was lost, check the payment provider for charges of
attempts that never credited before re-enabling the rule.

While a partition's ledger stream still has unwritten messages, rebuild refuses: those
messages are part of the state. `--apply-stream` first writes them to Postgres (as the
write-behind would, taking over every pending message), then rebuilds; a wallet without
hot state makes no new messages, so nothing of it can be missed.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from ..errors import ObolCliError
from .reconcile import add_redis_option, redis_client, stream_backlog
from .verify import add_database_option, wallet_ids, wallet_pool

REBUILD_CONSUMER = "obol-rebuild"


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
    from obol_wallet.ledger_queries import wallet_snapshot
    from obol_wallet.redis_backend import RedisBackend
    from obol_wallet.settings import WalletSettings
    from obol_wallet.top_up_store import get_rule
    from obol_wallet.writebehind import WriteBehind, WriteBehindError

    settings = WalletSettings.from_env()
    redis = redis_client(args.redis_url)
    try:
        async with wallet_pool(args.database_url) as pool:
            ids = await wallet_ids(pool, args.wallet)
            partitions = sorted(
                {
                    row["partition"]
                    for row in await pool.fetch(
                        "SELECT DISTINCT partition FROM wallets WHERE wallet_id = ANY($1::text[])",
                        ids,
                    )
                }
            )
            backlog = {p: n for p, n in (await stream_backlog(redis, partitions)).items() if n}
            if backlog and not args.apply_stream:
                listed = ", ".join(f"p{p}: {n}" for p, n in sorted(backlog.items()))
                raise ObolCliError(
                    f"ledger streams still hold unwritten messages ({listed}); let the "
                    "write-behind drain them, or pass --apply-stream"
                )
            if backlog:
                writer = WriteBehind(
                    redis, pool, sorted(backlog), REBUILD_CONSUMER, claim_idle_ms=0
                )
                try:
                    written = await writer.drain()
                except WriteBehindError as err:
                    raise ObolCliError(str(err)) from None
                print(f"obol: wrote {written} stream messages to Postgres", flush=True)
            hot = RedisBackend(
                redis,
                partitions=settings.partitions,
                idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
            )
            now_ms = time.time_ns() // 1_000_000
            since_ms = now_ms - settings.idempotency_ttl_seconds * 1000
            loaded = 0
            for wallet_id in ids:
                if await hot.is_hydrated(wallet_id):
                    continue
                snapshot = await wallet_snapshot(pool, wallet_id, requests_since_ms=since_ms)
                if await hot.hydrate(snapshot, now_ms=now_ms):
                    rule = await get_rule(pool, wallet_id)
                    if rule is not None:  # the auto top-up rule lives in the hot state too
                        await hot.mirror_top_up_rule(rule)
                    loaded += 1
                    print(f"obol: rebuilt {wallet_id}", flush=True)
    finally:
        await redis.aclose()
    print(f"obol: {loaded} of {len(ids)} wallets rebuilt, the others were hydrated")
    return 0

"""`obol reconcile`: compare the ledger, the Postgres rows and Redis' hot state.

For every wallet (or the ones named): each grant account's ledger balance against the
grant's remaining, the overdraft account against the overdraft used, the counters against
the grants and open holds, and (Redis backend) Redis' counters, grants and open holds
against Postgres. Prints every drift and exits 1 if there is any; expected: none once the
write-behind has drained. Wallets whose Redis state is ahead while their partition still
has unwritten stream messages are reported as lagging, not as drift.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from obol_core.redis import RedisClient, create_redis

from ..errors import ObolCliError
from .verify import add_database_option, wallet_ids, wallet_pool


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "reconcile",
        help="report drift between ledger, Postgres and Redis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_option(parser)
    add_redis_option(parser)
    parser.add_argument(
        "--backend",
        choices=("redis", "postgres"),  # obol_wallet.settings.BackendKind
        default=None,
        help="the wallet backend in use (default: $OBOL_WALLET_BACKEND, else redis); "
        "postgres checks the ledger only",
    )
    parser.add_argument(
        "--wallet", action="append", default=[], help="only this wallet (repeatable)"
    )
    parser.set_defaults(handler=run_reconcile)


def add_redis_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL"), help="Redis URL (default: $REDIS_URL)"
    )


def redis_client(url: str | None) -> RedisClient:
    if not url:
        raise ObolCliError("no Redis: set REDIS_URL or pass --redis-url")
    return create_redis(url)


async def stream_backlog(redis: RedisClient, partitions: range | list[int]) -> dict[int, int]:
    # Imported here, not at the top: `obol` must start (e.g. `obol migrate`) without
    # loading every service's code.
    from obol_wallet.redis_backend import ledger_stream

    """Unwritten ledger stream messages per partition (written ones are deleted)."""
    pipe = redis.pipeline(transaction=False)
    for partition in partitions:
        pipe.xlen(ledger_stream(partition))
    return dict(zip(partitions, map(int, await pipe.execute()), strict=True))


def run_reconcile(args: argparse.Namespace) -> int:
    return asyncio.run(_reconcile(args))


async def _reconcile(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `obol` must start (e.g. `obol migrate`) without
    # loading every service's code.
    from obol_wallet.reconcile import reconcile
    from obol_wallet.redis_backend import RedisBackend
    from obol_wallet.settings import BackendKind, WalletSettings

    settings = WalletSettings.from_env()
    backend = BackendKind(args.backend) if args.backend else settings.backend
    async with wallet_pool(args.database_url) as pool:
        # Named wallets are checked to exist; no names: every wallet and the whole ledger.
        only = await wallet_ids(pool, args.wallet) if args.wallet else None
        if backend is BackendKind.POSTGRES:
            report = await reconcile(pool, hot=None, now_ms=0, wallet_ids=only)
        else:
            redis = redis_client(args.redis_url)
            try:
                hot = RedisBackend(
                    redis,
                    partitions=settings.partitions,
                    idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
                )
                report = await reconcile(
                    pool,
                    hot=hot,
                    now_ms=time.time_ns() // 1_000_000,
                    backlog=await stream_backlog(redis, range(settings.partitions)),
                    wallet_ids=only,
                )
            finally:
                await redis.aclose()
    for drift in report.drift:
        print(f"obol: DRIFT {drift}", flush=True)
    if report.lagging:
        print(
            f"obol: {len(report.lagging)} wallets not yet written behind (backlog pending), "
            f"e.g. {report.lagging[0]}"
        )
    verdict = f"{len(report.drift)} drift" if report.drift else "no drift"
    print(f"obol: reconciled {report.wallets_checked} wallets ({backend.value}): {verdict}")
    return 1 if report.drift else 0

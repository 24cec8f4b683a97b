"""The ceiling: the wallet's own authorize Lua script pipelined straight into Redis with
redis-py (no gRPC, no service), from several connections at once.

Calls are built by the Redis backend's own `CallBuilder` (same script, keys, arguments
and validation as the service; the same EVALSHA per call as its pipelined batches), so
the only difference from BatchAuthorize is everything around Redis: gRPC, protobuf,
request resolution and result decoding. A reply `ok` counts; anything else is a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from typing import Any

from obol_core.ids import new_id, new_ulid
from obol_core.redis import create_redis
from obol_wallet.model import AuthorizeRequest, Idempotency
from obol_wallet.partitions import hold_id_for
from obol_wallet.settings import WalletSettings

from .config import AMOUNT, HOLD_TTL_SECONDS
from .jobs import JobResult, RawJob

MAX_LOOPS = 10_000_000
_OK = b"ok"
# The dry run's stand-in for the authorize script (no wallet in Redis to authorize on).
_STAND_IN = "redis.call('HINCRBY', KEYS[1], 'held', ARGV[1]) return {'ok'}"

Command = tuple[str, list[Any]]  # sha, keys + args


def authorize_request(tag: str, wallet_id: str) -> AuthorizeRequest:
    return AuthorizeRequest(
        idem=Idempotency(tag, hashlib.sha256(tag.encode()).hexdigest()),
        wallet_id=wallet_id,
        hold_id=hold_id_for(wallet_id, new_ulid()),
        entry_id=new_id("txn"),
        amount=AMOUNT,
        ttl_ms=HOLD_TTL_SECONDS * 1000,
        now_ms=time.time_ns() // 1_000_000,
    )


async def run_raw(job: RawJob) -> JobResult:
    from obol_wallet.redis_backend.calls import CallBuilder
    from obol_wallet.redis_backend.scripts import Scripts

    result = JobResult()
    window = job.window
    client = create_redis(job.redis_url)
    try:
        if job.dry_run:
            sha = str(await client.script_load(_STAND_IN))

            def command(tag: str, wallet_id: str) -> tuple[str, Sequence[Any]]:
                return sha, [1, f"bench-raw:{wallet_id}", 1]

        else:
            settings = WalletSettings.from_env({"OBOL_WALLET_PARTITIONS": str(job.partitions)})
            scripts = Scripts(client)
            await scripts.authorize.load()
            builder = CallBuilder(
                scripts,
                partitions=job.partitions,
                idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
                backlog_limit=settings.backlog_limit,
            )

            def command(tag: str, wallet_id: str) -> tuple[str, Sequence[Any]]:
                call = builder.authorize(authorize_request(tag, wallet_id))
                return call.script.sha, [len(call.keys), *call.keys, *call.args]

        async def sender(index: int) -> None:
            wallets = job.wallet_ids
            for n in range(MAX_LOOPS):
                if time.monotonic() >= window.measure_until:
                    return
                pipe = client.pipeline(transaction=False)
                for k in range(job.pipeline):
                    sha, args = command(
                        f"{job.tag}-{index}-{n}-{k}", wallets[(n * job.pipeline + k) % len(wallets)]
                    )
                    pipe.evalsha(sha, *args)
                replies = await pipe.execute(raise_on_error=False)
                if not window.counts(time.monotonic()):
                    continue
                result.calls += 1
                for reply in replies:
                    if isinstance(reply, list | tuple) and reply and reply[0] == _OK:
                        result.ok += 1
                    else:
                        result.failed += 1
                        result.errors[_reason(reply)] += 1

        delay = window.start_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await asyncio.gather(*(sender(i) for i in range(job.in_flight)))
    finally:
        await client.aclose()
    return result


def _reason(reply: Any) -> str:
    if isinstance(reply, Exception):
        return type(reply).__name__
    if isinstance(reply, list | tuple) and len(reply) > 1 and isinstance(reply[1], bytes):
        return reply[1].decode(errors="replace")
    return "unexpected reply"

"""What one authorize script costs Redis, and how much of it is Redis commands.

Measured on a private embedded Redis (the bundled server, `appendfsync always`), before
anything else starts, so nothing else shares its counters: wallets are opened and funded
through the Redis backend, `CONFIG RESETSTAT`, then authorizations through the backend's
batch path (pipelined EVALSHAs), then `INFO commandstats`. The script's time
(`cmdstat_evalsha`) includes the commands it runs (each also counted under its own name),
so the rest is Lua's own work: making the script's functions (Redis runs the whole
script body per call), cjson, string formatting, and moving arguments and replies between
Lua and Redis.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from obol_cli.embedded import EmbeddedRedis, free_port
from obol_core.ids import new_id
from obol_core.redis import create_redis
from obol_wallet.redis_backend import RedisBackend

from .config import SPREAD_FUNDS
from .raw import authorize_request
from .seed import fund

WALLETS = 100
CALLS = 2000
BATCH = 100
_OUTSIDE_THE_SCRIPT = {"cmdstat_evalsha", "cmdstat_config", "cmdstat_info"}


async def _measure(url: str, partitions: int) -> dict[str, Any]:
    client = create_redis(url)
    try:
        backend = RedisBackend(client, partitions=partitions)
        await backend.load_scripts()
        wallets = [new_id("wal") for _ in range(WALLETS)]
        for wallet_id in wallets:
            await fund(backend, wallet_id, SPREAD_FUNDS)
        requests = [authorize_request(f"cost-{i}", wallets[i % WALLETS]) for i in range(CALLS)]
        await client.config_resetstat()
        for start in range(0, CALLS, BATCH):
            results = await backend.authorize_many(requests[start : start + BATCH])
            if failed := [r for r in results if isinstance(r, Exception)]:
                raise RuntimeError(f"script cost: an authorization failed: {failed[0]!r}")
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    script = stats["cmdstat_evalsha"]
    inner = [s for name, s in stats.items() if name not in _OUTSIDE_THE_SCRIPT]
    calls = int(script["calls"])
    return {
        "authorize_script_redis_us": float(script["usec_per_call"]),
        "authorize_script_commands_redis_us": sum(s["usec"] for s in inner) / calls,
        "authorize_script_commands_per_call": sum(s["calls"] for s in inner) / calls,
    }


def script_cost(workdir: Path, partitions: int) -> dict[str, Any]:
    """The figures above, from a private Redis in `workdir/script-cost`."""
    with EmbeddedRedis(workdir / "script-cost", free_port()) as redis:
        return asyncio.run(_measure(redis.url, partitions))

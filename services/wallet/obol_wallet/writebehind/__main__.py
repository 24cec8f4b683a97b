"""`python -m obol_wallet.writebehind`: run one write-behind worker until SIGTERM/SIGINT.

| Variable | Default | Meaning |
| --- | --- | --- |
| `DATABASE_URL` | required | Postgres DSN (the wallet schema; migrations are applied at start, or only verified with `OBOL_MIGRATIONS=verify`). |
| `REDIS_URL` | required | Redis URL; `redis+cluster://` (or `OBOL_REDIS_CLUSTER=true`) for Redis Cluster. |
| `OBOL_WALLET_PARTITIONS` | `128` | Partitions of the deployment (as the wallet service has it). |
| `OBOL_WRITEBEHIND_SHARDS` | `1` | Workers sharing the partitions; shard i takes the i-th contiguous slice. |
| `OBOL_WRITEBEHIND_SHARD_INDEX` | from the consumer name | This worker's shard (0-based); unset: the `-<ordinal>` suffix of the consumer name (a StatefulSet pod name), else 0. |
| `OBOL_WRITEBEHIND_CONSUMER` | the host name | Consumer name in the `writebehind` group; keep it stable across restarts so a restarted worker re-reads its own pending messages. |
| `OBOL_WRITEBEHIND_BATCH` | `500` | Messages read per partition and written per transaction. |
| `OBOL_WRITEBEHIND_BLOCK_MS` | `200` | How long a read waits for new messages. |
| `OBOL_WRITEBEHIND_LINGER_MS` | `50` | A round that was not full lasts at least this long, so messages are written in batches (fewer commits) at the cost of this much lag; 0 writes each message as it lands. |
| `OBOL_WRITEBEHIND_CLAIM_IDLE_MS` | `30000` | Pending messages idle this long (a dead consumer's) are taken over. |
| `OBOL_WRITEBEHIND_HEALTH_PORT` | `50061` | gRPC health (`""` liveness, `readiness`: Postgres and Redis reachable). |
| `OBOL_HOST` | `0.0.0.0` | Address the health server binds. |
| `OBOL_LOG_LEVEL`, `OBOL_LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT` | | As for every service (obol_core.settings). |

Metrics: `obol.writebehind.lag` (ms, age of the oldest unwritten message) and
`obol.writebehind.backlog` (messages) per partition, `obol.writebehind.entries`,
`obol.writebehind.failures`.
"""

# ruff: noqa: E501

from __future__ import annotations

import asyncio
import os
import re
import socket

from obol_core.grpc_server import ReadinessCheck, build_server, run_service, stop_signals
from obol_core.logging import configure_logging
from obol_core.postgres import check_postgres, create_pool, prepare_schema
from obol_core.redis import check_redis, create_redis
from obol_core.settings import CommonSettings, SettingsError, env_int, env_str
from obol_core.telemetry import configure_telemetry

from ..schema import MIGRATIONS_DIR, SCHEMA
from ..settings import WalletSettings
from .worker import WriteBehind


def shard_partitions(partitions: int, shards: int, index: int) -> range:
    """The contiguous slice of partitions that shard `index` of `shards` owns."""
    if not 0 <= index < shards:
        raise SettingsError(f"shard index {index} is outside 0..{shards - 1}")
    return range(index * partitions // shards, (index + 1) * partitions // shards)


def _shard_index(consumer: str) -> int:
    if os.environ.get("OBOL_WRITEBEHIND_SHARD_INDEX", "").strip():
        return env_int("OBOL_WRITEBEHIND_SHARD_INDEX", 0, min_value=0)
    match = re.search(r"-(\d+)$", consumer)
    return int(match.group(1)) if match else 0


async def main() -> None:
    # Only health is served: no API keys are needed (health is never authenticated).
    settings = CommonSettings.from_env(
        "writebehind",
        50061,
        "OBOL_WRITEBEHIND_HEALTH_PORT",
        environ={**os.environ, "OBOL_AUTH": "disabled"},
    )
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    configure_telemetry(settings.service_name, settings.otlp_endpoint)
    consumer = env_str("OBOL_WRITEBEHIND_CONSUMER", socket.gethostname())
    shards = env_int("OBOL_WRITEBEHIND_SHARDS", 1, min_value=1)
    partitions = shard_partitions(
        WalletSettings.from_env().partitions, shards, _shard_index(consumer)
    )
    pool = await create_pool(
        settings.require_database_url(),
        min_size=1,
        max_size=4,
        application_name="obol-writebehind",
        search_path=SCHEMA,
    )
    await prepare_schema(pool, settings.migrations, schema=SCHEMA, migrations=MIGRATIONS_DIR)
    redis = create_redis(settings.require_redis_url())
    worker = WriteBehind(
        redis,
        pool,
        partitions,
        consumer,
        batch=env_int("OBOL_WRITEBEHIND_BATCH", 500, min_value=1, max_value=10_000),
        block_ms=env_int("OBOL_WRITEBEHIND_BLOCK_MS", 200, min_value=1),
        claim_idle_ms=env_int("OBOL_WRITEBEHIND_CLAIM_IDLE_MS", 30_000, min_value=100),
        linger_ms=env_int("OBOL_WRITEBEHIND_LINGER_MS", 50, min_value=0, max_value=1_000),
    )
    health = build_server(
        settings,
        [],
        [
            ReadinessCheck("postgres", lambda: check_postgres(pool)),
            ReadinessCheck("redis", lambda: check_redis(redis)),
        ],
    )
    stop = asyncio.Event()
    with stop_signals(stop):
        await health.start()
        try:
            await worker.run_until(stop)
        finally:
            await health.stop()
            await pool.close()
            await redis.aclose()


if __name__ == "__main__":
    run_service(main())

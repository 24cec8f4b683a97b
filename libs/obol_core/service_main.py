"""The `main()` every gRPC service shares: settings, logs, traces, storage, migrations, serve.

A service describes itself with a `ServiceSpec`; `launch(spec)` does the rest, so start-up
and shutdown behave the same everywhere (migrations applied before the port opens,
Postgres and Redis as readiness checks, connections closed after the drain).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from .grpc_server import ReadinessCheck, ServiceRegistration, run_service, serve
from .logging import configure_logging
from .postgres import check_postgres, create_pool, prepare_schema
from .redis import RedisClient, check_redis, create_redis
from .settings import CommonSettings
from .telemetry import configure_telemetry


@dataclass(frozen=True)
class Resources:
    """What a service's servicers are built from."""

    settings: CommonSettings
    pool: asyncpg.Pool[asyncpg.Record]
    redis: RedisClient | None


# A background loop the service runs while it serves (e.g. the wallet's expiry sweeper);
# it is cancelled at shutdown, after the RPCs have drained.
BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class ServicePlan:
    registrations: Sequence[ServiceRegistration]
    background: Sequence[BackgroundTask] = ()


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    default_port: int
    port_variable: str
    schema: str
    migrations: Path
    build: Callable[[Resources], ServicePlan]
    uses_redis: bool = False


async def _main(spec: ServiceSpec) -> None:
    settings = CommonSettings.from_env(spec.name, spec.default_port, spec.port_variable)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    configure_telemetry(settings.service_name, settings.otlp_endpoint)
    pool = await create_pool(
        settings.require_database_url(),
        application_name=f"obol-{spec.name}",
        search_path=spec.schema,
    )
    await prepare_schema(pool, settings.migrations, schema=spec.schema, migrations=spec.migrations)
    redis = create_redis(settings.require_redis_url()) if spec.uses_redis else None
    checks = [ReadinessCheck("postgres", lambda: check_postgres(pool))]
    if redis is not None:
        client = redis
        checks.append(ReadinessCheck("redis", lambda: check_redis(client)))

    plan = spec.build(Resources(settings, pool, redis))
    tasks = [
        asyncio.create_task(task(), name=f"{spec.name}-background") for task in plan.background
    ]

    async def close() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()
        if redis is not None:
            await redis.aclose()

    await serve(settings, plan.registrations, checks, on_shutdown=[close])


def launch(spec: ServiceSpec) -> None:
    """Run the service until SIGTERM/SIGINT (see obol_core.grpc_server.serve)."""
    run_service(_main(spec))

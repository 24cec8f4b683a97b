"""`python -m obol_wallet`: run the wallet service (gRPC, default port 50051)."""

from __future__ import annotations

import socket

from obol.wallet.v1 import wallet_pb2_grpc

from obol_core.grpc_server import ServiceRegistration
from obol_core.service_main import Resources, ServicePlan, ServiceSpec, launch

from .auto_top_up import AutoTopUpWorker
from .backend import WalletBackend
from .clock import SystemClock
from .core import WalletCore
from .payments import SandboxPaymentProvider
from .pg_backend import PostgresBackend
from .redis_backend import RedisBackend
from .schema import MIGRATIONS_DIR, SCHEMA
from .service import SERVICE_NAME, WalletService
from .settings import BackendKind, WalletSettings
from .sweeper import run_sweeper


def _backend(resources: Resources, settings: WalletSettings) -> WalletBackend:
    if settings.backend is BackendKind.POSTGRES:
        return PostgresBackend(resources.pool)
    assert resources.redis is not None
    return RedisBackend(
        resources.redis,
        partitions=settings.partitions,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        backlog_limit=settings.backlog_limit,
    )


def _services(resources: Resources) -> ServicePlan:
    settings = WalletSettings.from_env()
    backend = _backend(resources, settings)
    clock = SystemClock()
    core = WalletCore(
        resources.pool,
        backend,
        clock,
        partitions=settings.partitions,
        default_hold_ttl_ms=settings.default_hold_ttl_ms,
    )
    # The sandbox is the only payment provider so far (pm_ok... is charged, see payments.py).
    top_ups = AutoTopUpWorker(
        resources.pool, backend, SandboxPaymentProvider(), clock, consumer=socket.gethostname()
    )
    return ServicePlan(
        [
            ServiceRegistration(
                SERVICE_NAME,
                WalletService(resources.pool, core),
                wallet_pb2_grpc.add_WalletServiceServicer_to_server,
            )
        ],
        background=[lambda: run_sweeper(backend, clock), top_ups.run],
    )


SPEC = ServiceSpec(
    name="wallet",
    default_port=50051,
    port_variable="OBOL_WALLET_PORT",
    schema=SCHEMA,
    migrations=MIGRATIONS_DIR,
    build=_services,
    uses_redis=True,
)

if __name__ == "__main__":
    launch(SPEC)

"""`python -m obol_wallet`: run the wallet service (gRPC, default port 50051)."""

from __future__ import annotations

import socket

import structlog
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
from .settings import BackendKind, PaymentProviderKind, WalletSettings
from .sweeper import run_sweeper

_log = structlog.get_logger("obol.wallet")

# OBOL_PAYMENT_PROVIDER -> provider; the sandbox is the only one so far (see payments.py).
_PAYMENT_PROVIDERS = {PaymentProviderKind.SANDBOX: SandboxPaymentProvider}


def _backend(resources: Resources, settings: WalletSettings) -> WalletBackend:
    if settings.backend is BackendKind.POSTGRES:
        return PostgresBackend(resources.pool)
    assert resources.redis is not None
    return RedisBackend(
        resources.redis,
        partitions=settings.partitions,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        backlog_limit=settings.backlog_limit,
        replica_acks=settings.replica_acks,
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
    provider = _PAYMENT_PROVIDERS[settings.payment_provider]()
    if settings.payment_provider is PaymentProviderKind.SANDBOX:
        _log.warning("auto top-ups use the sandbox payment provider: no real money moves")
    top_ups = AutoTopUpWorker(
        resources.pool,
        backend,
        provider,
        clock,
        consumer=socket.gethostname(),
        retry_base_ms=settings.top_up_retry_base_ms,
        retry_max_ms=settings.top_up_retry_max_ms,
        lease_ms=settings.top_up_lease_ms,
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

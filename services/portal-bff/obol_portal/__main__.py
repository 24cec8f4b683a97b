"""`python -m obol_portal`: run the portal-bff (HTTP, default port 8080)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc.aio
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc

from obol_core.grpc_client import create_channel
from obol_core.grpc_server import READINESS_SERVICE
from obol_core.logging import configure_logging
from obol_core.settings import SettingsError
from obol_core.telemetry import configure_telemetry

from .app import Dependencies, create_app
from .settings import PortalSettings


def _readiness_probe(channel: grpc.aio.Channel, target: str) -> Callable[[], Awaitable[None]]:
    stub = health_pb2_grpc.HealthStub(channel)

    async def check() -> None:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=READINESS_SERVICE))
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"{target} is not serving")

    return check


@asynccontextmanager
async def _service_probes(settings: PortalSettings) -> AsyncIterator[Dependencies]:
    """One channel per gRPC service, probed on its "readiness" health status."""
    targets = {
        "wallet": settings.wallet_target,
        "pricing": settings.pricing_target,
        "costs": settings.costs_target,
    }
    channels = {
        name: create_channel(
            target, api_key=settings.api_key, deadline_seconds=settings.client_deadline_seconds
        )
        for name, target in targets.items()
    }
    try:
        yield [(name, _readiness_probe(channels[name], target)) for name, target in targets.items()]
    finally:
        for channel in channels.values():
            await channel.close()


def main() -> None:
    try:
        settings = PortalSettings.from_env()
    except SettingsError as err:
        raise SystemExit(f"SettingsError: {err}") from None
    configure_logging("portal-bff", settings.log_level, settings.log_format)
    configure_telemetry("portal-bff", settings.otlp_endpoint)
    app = create_app(lambda: _service_probes(settings))
    # uvicorn handles SIGTERM/SIGINT: it stops accepting, lets requests finish, then exits.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()

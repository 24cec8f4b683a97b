"""The gRPC server bootstrap every Obol service runs.

    async def main() -> None:
        settings = CommonSettings.from_env("wallet", 50051, "OBOL_WALLET_PORT")
        configure_logging(settings.service_name, settings.log_level, settings.log_format)
        configure_telemetry(settings.service_name, settings.otlp_endpoint)
        pool = await create_pool(settings.require_database_url())
        await serve(
            settings,
            [ServiceRegistration("obol.wallet.v1.WalletService", servicer,
                                 wallet_pb2_grpc.add_WalletServiceServicer_to_server)],
            [ReadinessCheck("postgres", lambda: check_postgres(pool))],
            on_shutdown=[pool.close],
        )

    run_service(main())

Health (grpc.health.v1) reports liveness as the overall service "" (SERVING while the
process runs) and readiness as "readiness" and as each service's name (SERVING only while
every readiness check passes), so Kubernetes gRPC probes can use `service: ""` for
liveness and `service: readiness` for readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import structlog
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .apikeys import Scope, ScopePolicy
from .interceptors import AuthInterceptor, EdgeInterceptor
from .settings import AuthMode, CommonSettings, SettingsError

__all__ = [
    "READINESS_SERVICE",
    "Context",
    "ReadinessCheck",
    "RunningServer",
    "ServiceRegistration",
    "build_server",
    "run_service",
    "serve",
]

READINESS_SERVICE = "readiness"

# What servicer methods receive; request/response types are already in their signatures.
Context = grpc.aio.ServicerContext[Any, Any]
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

_log = structlog.get_logger("obol.server")


@dataclass(frozen=True)
class ServiceRegistration:
    """One gRPC service to serve.

    `name` is the full service name ("obol.wallet.v1.WalletService"); `add_to_server` is
    the generated `add_<Service>Servicer_to_server`. `scope_overrides` maps bare method
    names ("TopUp") to the scope they require when the verb-based default is wrong.
    """

    name: str
    servicer: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    scope_overrides: Mapping[str, Scope] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadinessCheck:
    """A dependency probe: `check` raises (or times out) when the dependency is unusable."""

    name: str
    check: Callable[[], Awaitable[None]]


def _bind_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{port}"


class RunningServer:
    """A built server: `start()` binds and serves, `stop()` shuts down gracefully.

    Built by `build_server`; after `start()`, `port` is the bound port (useful with port 0).
    """

    def __init__(
        self,
        settings: CommonSettings,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
        readiness_checks: Sequence[ReadinessCheck],
        on_shutdown: Sequence[Callable[[], Awaitable[None]]],
    ) -> None:
        self.settings = settings
        self.health = health_servicer
        self._server = server
        self._port: int | None = None
        self._service_names = tuple(service_names)
        self._checks = tuple(readiness_checks)
        self._on_shutdown = tuple(on_shutdown)
        self._failing: frozenset[str] | None = None
        self._readiness_task: asyncio.Task[None] | None = None
        self._serving = False
        self._released = False
        self._stopped = False

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    async def start(self) -> None:
        """Bind `settings.host:settings.port` (SettingsError when that fails) and serve."""
        address = _bind_address(self.settings.host, self.settings.port)
        try:
            self._port = self._server.add_insecure_port(address)
        except RuntimeError as err:
            await self._release()
            raise SettingsError(f"cannot listen on {address}: {err}") from err
        await self._server.start()
        self._serving = True
        await self.health.set(health.OVERALL_HEALTH, _SERVING)
        await self.check_readiness()
        self._readiness_task = asyncio.create_task(
            self._readiness_loop(), name=f"{self.settings.service_name}-readiness"
        )
        _log.info(
            "server started",
            address=_bind_address(self.settings.host, self.port),
            services=list(self._service_names),
        )

    async def check_readiness(self) -> bool:
        """Run every readiness check once and publish the result; True when all pass."""
        results = await asyncio.gather(*(self._run_check(check) for check in self._checks))
        failures = {name: error for name, error in results if error is not None}
        status = _NOT_SERVING if failures else _SERVING
        for service in (*self._service_names, READINESS_SERVICE):
            await self.health.set(service, status)
        failing = frozenset(failures)
        if failing != self._failing:
            if failures:
                _log.warning("not ready: dependency check failed", failed=failures)
            else:
                _log.info("ready", checks=[check.name for check in self._checks])
            self._failing = failing
        return not failures

    async def _run_check(self, check: ReadinessCheck) -> tuple[str, str | None]:
        timeout = max(self.settings.readiness_interval_seconds, 1.0)
        try:
            async with asyncio.timeout(timeout):
                await check.check()
        except TimeoutError:
            return check.name, f"timed out after {timeout:g}s"
        except Exception as exc:
            return check.name, f"{type(exc).__name__}: {exc}"
        return check.name, None

    async def _readiness_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.readiness_interval_seconds)
            await self.check_readiness()

    async def _release(self) -> None:
        """Dispose of a server that never served.

        grpc's AioServer logs itself from `__dealloc__` (at DEBUG) unless it was stopped
        after starting; a log handler that keeps records (pytest's caplog) then holds a
        freed object and the process crashes later. Starting it with no port bound and
        stopping it releases it cleanly.
        """
        self._released = True
        await self._server.start()
        await self._server.stop(None)

    async def stop(self) -> None:
        """Graceful shutdown; safe to call more than once.

        Health turns NOT_SERVING everywhere, the server keeps serving for
        `shutdown_delay_seconds` (so load balancers notice), then refuses new RPCs and gives
        in-flight ones `shutdown_grace_seconds` to finish; finally the `on_shutdown`
        callbacks run in order (a failing callback is logged and the rest still run), also
        when the server never started.
        """
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        if self._serving:
            if self._readiness_task is not None:
                self._readiness_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._readiness_task
            await self.health.enter_graceful_shutdown()
            if self.settings.shutdown_delay_seconds > 0:
                await asyncio.sleep(self.settings.shutdown_delay_seconds)
            await self._server.stop(self.settings.shutdown_grace_seconds)
        elif not self._released:
            await self._release()
        for callback in self._on_shutdown:
            try:
                await callback()
            except Exception:
                _log.exception("shutdown callback failed", callback=repr(callback))
        _log.info("server stopped", duration_ms=round((time.monotonic() - started) * 1000, 1))


def build_server(
    settings: CommonSettings,
    services: Sequence[ServiceRegistration],
    readiness_checks: Sequence[ReadinessCheck],
    *,
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> RunningServer:
    """Create the server (interceptors, services, health, reflection); `start()` binds it.

    Interceptor order: edge (span, logs, metrics, error mapping, validation; health and
    reflection pass through untraced), auth (API keys and scopes).
    """
    overrides = {
        f"/{service.name}/{method}": scope
        for service in services
        for method, scope in service.scope_overrides.items()
    }
    server = grpc.aio.server(
        interceptors=[
            EdgeInterceptor(),
            AuthInterceptor(
                settings.api_keys,
                ScopePolicy(overrides),
                enabled=settings.auth_mode is AuthMode.REQUIRED,
            ),
        ],
        # Fail at startup when the port is taken instead of silently sharing it.
        options=[("grpc.so_reuseport", 0)],
    )
    for service in services:
        service.add_to_server(service.servicer, server)
    names = [service.name for service in services]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return RunningServer(settings, server, health_servicer, names, readiness_checks, on_shutdown)


async def serve(
    settings: CommonSettings,
    services: Sequence[ServiceRegistration],
    readiness_checks: Sequence[ReadinessCheck],
    *,
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (see `RunningServer.stop`)."""
    running = build_server(settings, services, readiness_checks, on_shutdown=on_shutdown)
    stop_requested = asyncio.Event()
    with stop_signals(stop_requested):
        try:
            await running.start()
            await stop_requested.wait()
            _log.info("shutdown requested", grace_seconds=settings.shutdown_grace_seconds)
        finally:
            await running.stop()


@contextlib.contextmanager
def stop_signals(stop_requested: asyncio.Event) -> Iterator[None]:
    """For the block: SIGTERM and SIGINT set `stop_requested`.

    Later stop signals are logged and ignored until the block ends (the drain is inside
    it): they do come in bursts (a parent-death signal arrives once per thread of a killed
    `obol`; an impatient operator), and must not cut the drain short. SIGKILL remains the
    way to stop at once.
    """
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_stop_signal(sig: signal.Signals) -> None:
        if stop_requested.is_set():
            _log.info("stop signal ignored: already stopping", signal=sig.name)
        stop_requested.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_stop_signal, sig)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop; a configuration error exits with its message."""
    try:
        uvloop.run(main)
    except SettingsError as err:
        raise SystemExit(f"SettingsError: {err}") from None

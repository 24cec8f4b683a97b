"""Start every service of the registry as a child process and wait until all are healthy."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from obol_core.apikeys import hash_api_key

from .errors import ObolCliError
from .health import is_healthy
from .services import SERVICES, Kind
from .supervisor import Supervisor

HOST = "127.0.0.1"


@dataclass(frozen=True)
class StackInfo:
    """Where a running stack is and how to call it."""

    addresses: Mapping[str, str]  # service name -> "127.0.0.1:port"
    database_url: str
    redis_url: str
    api_key: str  # raw admin key

    @property
    def portal_url(self) -> str:
        return f"http://{self.addresses['portal']}/"


class ServiceStartError(ObolCliError):
    """A service exited or stayed unhealthy during start-up; carries its last log lines."""

    def __init__(self, service: str, reason: str, tail: list[str]) -> None:
        message = f"{service} {reason}"
        if tail:
            message += f"\n--- last log lines of {service} ---\n" + "\n".join(tail)
        super().__init__(message)
        self.service = service


def service_env(
    base: Mapping[str, str],
    ports: Mapping[str, int],
    *,
    database_url: str,
    redis_url: str,
    api_key: str,
    api_key_name: str = "demo",
) -> dict[str, str]:
    """The environment every service gets: storage URLs, every port and gRPC target, the
    admin key's hash (to accept calls) and the raw key (for service-to-service calls)."""
    env = {
        **base,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OBOL_API_KEYS": f"{api_key_name}:admin:{hash_api_key(api_key)}",
        "OBOL_API_KEY": api_key,
        "OBOL_HOST": base.get("OBOL_HOST", HOST),  # gRPC services: local only by default
        "OBOL_PORTAL_HOST": base.get("OBOL_PORTAL_HOST", HOST),
        "PYTHONUNBUFFERED": "1",
    }
    for service in SERVICES:
        env[service.port_env] = str(ports[service.name])
        if service.kind is Kind.GRPC:
            env[service.target_env] = f"{HOST}:{ports[service.name]}"
    return env


def launch_services(
    supervisor: Supervisor,
    env: Mapping[str, str],
    ports: Mapping[str, int],
    *,
    timeout: float,
    progress: Callable[[str], None],
) -> dict[str, str]:
    """Start all services, then wait (up to `timeout` seconds) until each is healthy,
    reporting each as it comes up. Returns each service's address."""
    addresses = {s.name: f"{HOST}:{ports[s.name]}" for s in SERVICES}
    for service in SERVICES:
        supervisor.start(service.name, [sys.executable, "-m", service.module], env)
    progress(f"started {', '.join(addresses)}; waiting until they are healthy")
    started = time.monotonic()
    pending = list(SERVICES)
    while pending:
        for service in list(pending):
            child = supervisor[service.name]
            if child.returncode is not None:
                raise ServiceStartError(
                    service.name,
                    f"exited with code {child.returncode} during start-up",
                    child.tail(),
                )
            if is_healthy(service, addresses[service.name]):
                elapsed = time.monotonic() - started
                progress(f"{service.name} is healthy at {addresses[service.name]} ({elapsed:.1f}s)")
                pending.remove(service)
        if pending and time.monotonic() - started > timeout:
            late = pending[0]
            raise ServiceStartError(
                late.name,
                f"not healthy at {addresses[late.name]} after {timeout:.0f}s "
                f"(still waiting for: {', '.join(s.name for s in pending)})",
                supervisor[late.name].tail(),
            )
        if pending:
            time.sleep(0.2)
    return addresses

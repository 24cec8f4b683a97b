"""The one list of Obol's services: how to start each, where it listens, how to probe it.

`obol run` and the test suite's `stack` fixture both start exactly these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from .errors import ObolCliError


class Kind(StrEnum):
    GRPC = "grpc"  # probed with grpc.health.v1 Check(service="readiness")
    HTTP = "http"  # probed with GET /healthz


@dataclass(frozen=True)
class ServiceDef:
    name: str
    module: str  # started as `python -m <module>`
    port_env: str
    default_port: int
    kind: Kind

    @property
    def target_env(self) -> str:
        """The variable through which the other services find this one (gRPC only)."""
        return f"OBOL_{self.name.upper()}_TARGET"


SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("wallet", "obol_wallet", "OBOL_WALLET_PORT", 50051, Kind.GRPC),
    ServiceDef("pricing", "obol_pricing", "OBOL_PRICING_PORT", 50052, Kind.GRPC),
    ServiceDef("costs", "obol_costs", "OBOL_COSTS_PORT", 50053, Kind.GRPC),
    ServiceDef("portal", "obol_portal", "OBOL_PORTAL_PORT", 8080, Kind.HTTP),
    # The wallet's write-behind worker (Redis ledger stream -> Postgres); its port serves
    # only gRPC health.
    ServiceDef(
        "writebehind", "obol_wallet.writebehind", "OBOL_WRITEBEHIND_HEALTH_PORT", 50061, Kind.GRPC
    ),
)


def env_port(environ: Mapping[str, str], name: str, default: int) -> int:
    """The port in variable `name`, or `default` when it is unset or blank."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ObolCliError(f"{name} must be a port number (1-65535), got {raw!r}")
    return int(raw)


def ports_from_env(environ: Mapping[str, str]) -> dict[str, int]:
    """Each service's port: its `OBOL_<NAME>_PORT` if set, else its default."""
    return {s.name: env_port(environ, s.port_env, s.default_port) for s in SERVICES}

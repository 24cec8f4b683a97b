"""The portal-bff's settings: its HTTP port and where the gRPC services are.

| Variable | Default | Meaning |
| --- | --- | --- |
| `OBOL_PORTAL_HOST` | `0.0.0.0` | Address the HTTP server binds. |
| `OBOL_PORTAL_PORT` | `8080` | HTTP port. |
| `OBOL_WALLET_TARGET` | `127.0.0.1:50051` | The wallet service (host:port). |
| `OBOL_PRICING_TARGET` | `127.0.0.1:50052` | The pricing service. |
| `OBOL_COSTS_TARGET` | `127.0.0.1:50053` | The costs service. |
| `OBOL_API_KEY` | unset | The API key the portal presents to the gRPC services. |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from obol_core.settings import (
    LOG_LEVELS,
    LogFormat,
    SettingsError,
    env_choice,
    env_duration_seconds,
    env_int,
    env_optional_str,
    env_str,
)


@dataclass(frozen=True)
class PortalSettings:
    host: str
    port: int
    wallet_target: str
    pricing_target: str
    costs_target: str
    api_key: str | None
    log_level: str
    log_format: LogFormat
    otlp_endpoint: str | None
    client_deadline_seconds: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PortalSettings:
        log_level = env_str("OBOL_LOG_LEVEL", "info", environ=environ).lower()
        if log_level not in LOG_LEVELS:
            raise SettingsError(
                f"OBOL_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
            )
        return cls(
            host=env_str("OBOL_PORTAL_HOST", "0.0.0.0", environ=environ),
            port=env_int("OBOL_PORTAL_PORT", 8080, min_value=1, max_value=65535, environ=environ),
            wallet_target=env_str("OBOL_WALLET_TARGET", "127.0.0.1:50051", environ=environ),
            pricing_target=env_str("OBOL_PRICING_TARGET", "127.0.0.1:50052", environ=environ),
            costs_target=env_str("OBOL_COSTS_TARGET", "127.0.0.1:50053", environ=environ),
            api_key=env_optional_str("OBOL_API_KEY", environ=environ),
            log_level=log_level,
            log_format=env_choice("OBOL_LOG_FORMAT", LogFormat.JSON, LogFormat, environ=environ),
            otlp_endpoint=env_optional_str("OTEL_EXPORTER_OTLP_ENDPOINT", environ=environ),
            client_deadline_seconds=env_duration_seconds(
                "OBOL_CLIENT_DEADLINE_SECONDS", 5.0, environ=environ
            ),
        )

"""Typed settings read from the environment, failing fast with a message naming the variable.

A variable that is unset or blank (only whitespace) takes its default. Durations accept
plain seconds (`10`, `0.5`) or a unit suffix (`250ms`, `10s`, `2m`, `1h`).

| Variable | Default | Meaning |
| --- | --- | --- |
| `OBOL_HOST` | `0.0.0.0` | Address the gRPC server binds. |
| `OBOL_<SERVICE>_PORT` | per service (wallet 50051, pricing 50052, costs 50053) | gRPC port (1-65535). |
| `DATABASE_URL` | unset | Postgres DSN (`postgresql://user:pass@host:5432/db`); required by services with a database. |
| `REDIS_URL` | unset | Redis URL (`redis://host:6379/0`); `redis+cluster://host:port` selects Redis Cluster. Required by services that use Redis. |
| `OBOL_REDIS_CLUSTER` | `false` | Treat `REDIS_URL` as a Redis Cluster seed even with a plain `redis://` scheme. |
| `OBOL_API_KEYS` | empty | Operator API keys, comma-separated `name:scope:sha256hex` (scope: `admin`, `ingest` or `read`; the digest is the SHA-256 hex of the key, never the key itself). |
| `OBOL_AUTH` | `required` | `required`: every RPC needs a valid key (startup fails if `OBOL_API_KEYS` is empty); `disabled`: no authentication (local development only). |
| `OBOL_LOG_LEVEL` | `info` | `debug`, `info`, `warning`, `error` or `critical`. |
| `OBOL_LOG_FORMAT` | `json` | `json` (one JSON object per line) or `console` (human-readable). |
| `OTEL_EXPORTER_OTLP_ENDPOINT` | unset | OTLP/gRPC collector endpoint (`http://collector:4317`); traces and metrics are exported only when set. |
| `OBOL_SHUTDOWN_GRACE_SECONDS` | `10` | On SIGTERM/SIGINT, how long in-flight RPCs may run before being cancelled. |
| `OBOL_SHUTDOWN_DELAY_SECONDS` | `0` | On SIGTERM/SIGINT, how long to keep serving after health turns NOT_SERVING, so load balancers stop routing first. |
| `OBOL_CLIENT_DEADLINE_SECONDS` | `5` | Default deadline of outgoing unary-response gRPC calls that set none. |
| `OBOL_READINESS_INTERVAL_SECONDS` | `2` | How often dependency readiness checks run. |
| `OBOL_MIGRATIONS` | `apply` | `apply`: at start, a service applies its pending database migrations (one starter at a time); `verify`: it only checks that all are applied and refuses to start otherwise, so it can run as a database role without DDL rights (`obol migrate` applies them first, e.g. the migration Job; docs/deploy.md). |
"""

# The table above is copied into the README: one row per line, whatever its length.
# ruff: noqa: E501

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from .apikeys import ApiKey, parse_api_keys

__all__ = [
    "AuthMode",
    "CommonSettings",
    "LogFormat",
    "MigrationMode",
    "SettingsError",
    "env_bool",
    "env_choice",
    "env_duration_seconds",
    "env_int",
    "env_optional_str",
    "env_str",
]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

E = TypeVar("E", bound=Enum)


class SettingsError(Exception):
    """A missing or malformed environment variable; the message names it."""


class AuthMode(Enum):
    REQUIRED = "required"
    DISABLED = "disabled"


class MigrationMode(Enum):
    APPLY = "apply"
    VERIFY = "verify"


class LogFormat(Enum):
    JSON = "json"
    CONSOLE = "console"


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def env_optional_str(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    return _raw(name, environ)


def env_str(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None else value


def env_int(
    name: str,
    default: int,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None:
        return default
    if min_value is not None and max_value is not None:
        expected = f"an integer between {min_value} and {max_value}"
    elif min_value is not None:
        expected = f"an integer >= {min_value}"
    elif max_value is not None:
        expected = f"an integer <= {max_value}"
    else:
        expected = "an integer"
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise SettingsError(f"{name} must be {expected}, got {value!r}")
    number = int(value)
    if (min_value is not None and number < min_value) or (
        max_value is not None and number > max_value
    ):
        raise SettingsError(f"{name} must be {expected}, got {value!r}")
    return number


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise SettingsError(
        f"{name} must be a boolean (true/false, 1/0, yes/no, on/off), got {value!r}"
    )


def env_duration_seconds(
    name: str,
    default: float,
    *,
    allow_zero: bool = False,
    environ: Mapping[str, str] | None = None,
) -> float:
    value = _raw(name, environ)
    if value is None:
        return default
    match = _DURATION_RE.match(value)
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"] if match else math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        sign = ">= 0" if allow_zero else "> 0"
        raise SettingsError(
            f"{name} must be a duration {sign} such as 10, 2.5s, 250ms or 1m, got {value!r}"
        )
    return seconds


def env_choice(
    name: str, default: E, enum: type[E], *, environ: Mapping[str, str] | None = None
) -> E:
    value = _raw(name, environ)
    if value is None:
        return default
    for member in enum:
        if member.value == value.lower():
            return member
    choices = ", ".join(str(m.value) for m in enum)
    raise SettingsError(f"{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class CommonSettings:
    """What every Obol gRPC service reads from its environment (see the module table)."""

    service_name: str
    host: str
    port: int
    database_url: str | None
    redis_url: str | None
    redis_cluster: bool
    api_keys: tuple[ApiKey, ...]
    auth_mode: AuthMode
    log_level: str
    log_format: LogFormat
    otlp_endpoint: str | None
    shutdown_grace_seconds: float
    shutdown_delay_seconds: float
    client_deadline_seconds: float
    readiness_interval_seconds: float
    migrations: MigrationMode = MigrationMode.APPLY

    @classmethod
    def from_env(
        cls,
        service_name: str,
        default_port: int,
        port_var: str,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> CommonSettings:
        raw_keys = env_str("OBOL_API_KEYS", "", environ=environ)
        try:
            api_keys = parse_api_keys(raw_keys)
        except ValueError as err:
            raise SettingsError(f"OBOL_API_KEYS is invalid: {err}") from None
        auth_mode = env_choice("OBOL_AUTH", AuthMode.REQUIRED, AuthMode, environ=environ)
        if auth_mode is AuthMode.REQUIRED and not api_keys:
            raise SettingsError(
                "OBOL_API_KEYS is empty but OBOL_AUTH=required: configure at least one key as "
                "name:scope:sha256hex, or set OBOL_AUTH=disabled for local development"
            )
        log_level = env_str("OBOL_LOG_LEVEL", "info", environ=environ).lower()
        if log_level not in LOG_LEVELS:
            raise SettingsError(
                f"OBOL_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
            )
        return cls(
            service_name=service_name,
            host=env_str("OBOL_HOST", "0.0.0.0", environ=environ),
            port=env_int(port_var, default_port, min_value=1, max_value=65535, environ=environ),
            database_url=env_optional_str("DATABASE_URL", environ=environ),
            redis_url=env_optional_str("REDIS_URL", environ=environ),
            redis_cluster=env_bool("OBOL_REDIS_CLUSTER", False, environ=environ),
            api_keys=api_keys,
            auth_mode=auth_mode,
            log_level=log_level,
            log_format=env_choice("OBOL_LOG_FORMAT", LogFormat.JSON, LogFormat, environ=environ),
            otlp_endpoint=env_optional_str("OTEL_EXPORTER_OTLP_ENDPOINT", environ=environ),
            shutdown_grace_seconds=env_duration_seconds(
                "OBOL_SHUTDOWN_GRACE_SECONDS", 10.0, allow_zero=True, environ=environ
            ),
            shutdown_delay_seconds=env_duration_seconds(
                "OBOL_SHUTDOWN_DELAY_SECONDS", 0.0, allow_zero=True, environ=environ
            ),
            client_deadline_seconds=env_duration_seconds(
                "OBOL_CLIENT_DEADLINE_SECONDS", 5.0, environ=environ
            ),
            readiness_interval_seconds=env_duration_seconds(
                "OBOL_READINESS_INTERVAL_SECONDS", 2.0, environ=environ
            ),
            migrations=env_choice(
                "OBOL_MIGRATIONS", MigrationMode.APPLY, MigrationMode, environ=environ
            ),
        )

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise SettingsError(f"DATABASE_URL is required by {self.service_name} but is not set")
        return self.database_url

    def require_redis_url(self) -> str:
        if self.redis_url is None:
            raise SettingsError(f"REDIS_URL is required by {self.service_name} but is not set")
        return self.redis_url

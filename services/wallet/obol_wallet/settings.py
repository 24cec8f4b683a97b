"""Wallet-specific settings (the common ones are in obol_core.settings).

| Variable | Default | Meaning |
| --- | --- | --- |
| `OBOL_WALLET_BACKEND` | `redis` | `redis` (Lua hot path, ledger written behind) or `postgres` (the baseline: one transaction per operation). |
| `OBOL_WALLET_PARTITIONS` | `128` | Number of Redis partitions (hash tags) wallets are spread over; fixed for a deployment's life. |
| `OBOL_IDEMPOTENCY_TTL_SECONDS` | `604800` | How long a hot-path request_id is remembered in Redis (it is kept in Postgres too). |
| `OBOL_WALLET_BACKLOG_LIMIT` | `100000` | Unwritten ledger messages per partition past which spends are refused (RESOURCE_EXHAUSTED). |
| `OBOL_HOLD_TTL_SECONDS` | `600` | Default hold TTL when Authorize sets none. |
| `OBOL_TOP_UP_RETRY_BASE_SECONDS` | `60` | Wait before retrying a failed auto top-up; doubled after each further failure. |
| `OBOL_TOP_UP_RETRY_MAX_SECONDS` | `3600` | The longest wait between auto top-up retries (at least the base). |
| `OBOL_TOP_UP_LEASE_SECONDS` | `60` | An attempt a worker took and did not finish (it died) goes to another worker after this. |
| `OBOL_REDIS_REPLICA_ACKS` | `0` | Replicas that must have a change before the wallet answers it (WAIT after every script, on the same connection). 0: the primary's AOF only. Set it to 1 when Redis has replicas that can be failed over to (see docs/wallet.md, "Replicas and failover"). |
| `OBOL_REDIS_REPLICA_ACK_TIMEOUT_MS` | `100` | How long to wait for those replicas; fewer in time refuse the call with UNAVAILABLE `REPLICATION_UNCONFIRMED` (already applied on the primary: retry with the same request_id). |
| `OBOL_PAYMENT_PROVIDER` | `sandbox` | Who charges auto top-ups. Only `sandbox` exists so far: deterministic, no real money (`pm_ok...` succeed, `pm_fail...` decline); the service logs a warning at start. |
"""

# ruff: noqa: E501

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from obol_core.redis import ReplicaAcks
from obol_core.settings import SettingsError, env_choice, env_int

from .partitions import DEFAULT_PARTITIONS

# Auto top-up timings (AutoTopUpWorker's defaults too).
TOP_UP_RETRY_BASE_SECONDS = 60
TOP_UP_RETRY_MAX_SECONDS = 3600
TOP_UP_LEASE_SECONDS = 60
REPLICA_ACK_TIMEOUT_MS = 100


class PaymentProviderKind(enum.Enum):
    SANDBOX = "sandbox"


class BackendKind(enum.Enum):
    REDIS = "redis"
    POSTGRES = "postgres"


@dataclass(frozen=True)
class WalletSettings:
    backend: BackendKind
    partitions: int
    idempotency_ttl_seconds: int
    backlog_limit: int
    default_hold_ttl_ms: int
    payment_provider: PaymentProviderKind
    top_up_retry_base_ms: int
    top_up_retry_max_ms: int
    top_up_lease_ms: int
    replica_acks: ReplicaAcks | None  # None: answer once the primary has the change

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WalletSettings:
        retry_base = env_int(
            "OBOL_TOP_UP_RETRY_BASE_SECONDS",
            TOP_UP_RETRY_BASE_SECONDS,
            min_value=1,
            max_value=86400,
            environ=environ,
        )
        retry_max = env_int(
            "OBOL_TOP_UP_RETRY_MAX_SECONDS",
            TOP_UP_RETRY_MAX_SECONDS,
            min_value=1,
            max_value=7 * 86400,
            environ=environ,
        )
        replicas = env_int("OBOL_REDIS_REPLICA_ACKS", 0, min_value=0, max_value=16, environ=environ)
        ack_timeout_ms = env_int(
            "OBOL_REDIS_REPLICA_ACK_TIMEOUT_MS",
            REPLICA_ACK_TIMEOUT_MS,
            min_value=1,
            max_value=60_000,
            environ=environ,
        )
        if retry_max < retry_base:
            raise SettingsError(
                f"OBOL_TOP_UP_RETRY_MAX_SECONDS ({retry_max}) must be at least "
                f"OBOL_TOP_UP_RETRY_BASE_SECONDS ({retry_base})"
            )
        return cls(
            backend=env_choice(
                "OBOL_WALLET_BACKEND", BackendKind.REDIS, BackendKind, environ=environ
            ),
            partitions=env_int(
                "OBOL_WALLET_PARTITIONS",
                DEFAULT_PARTITIONS,
                min_value=1,
                max_value=16384,
                environ=environ,
            ),
            idempotency_ttl_seconds=env_int(
                "OBOL_IDEMPOTENCY_TTL_SECONDS", 7 * 86400, min_value=60, environ=environ
            ),
            backlog_limit=env_int(
                "OBOL_WALLET_BACKLOG_LIMIT", 100_000, min_value=1, environ=environ
            ),
            default_hold_ttl_ms=1000
            * env_int("OBOL_HOLD_TTL_SECONDS", 600, min_value=1, max_value=86400, environ=environ),
            payment_provider=env_choice(
                "OBOL_PAYMENT_PROVIDER",
                PaymentProviderKind.SANDBOX,
                PaymentProviderKind,
                environ=environ,
            ),
            top_up_retry_base_ms=retry_base * 1000,
            top_up_retry_max_ms=retry_max * 1000,
            top_up_lease_ms=1000
            * env_int(
                "OBOL_TOP_UP_LEASE_SECONDS",
                TOP_UP_LEASE_SECONDS,
                min_value=1,
                max_value=86400,
                environ=environ,
            ),
            replica_acks=ReplicaAcks(replicas, ack_timeout_ms) if replicas else None,
        )

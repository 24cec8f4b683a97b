"""Wallet settings from the environment: defaults, overrides, refusals naming the variable."""

import pytest

from obol_core.redis import ReplicaAcks
from obol_core.settings import SettingsError
from obol_wallet.auto_top_up import LEASE_MS, RETRY_BASE_MS, RETRY_MAX_MS
from obol_wallet.settings import BackendKind, WalletSettings


def test_defaults() -> None:
    settings = WalletSettings.from_env({})
    assert settings.backend is BackendKind.REDIS
    assert settings.default_hold_ttl_ms == 600_000
    assert (settings.top_up_retry_base_ms, settings.top_up_retry_max_ms) == (60_000, 3_600_000)
    assert settings.top_up_lease_ms == 60_000
    assert settings.replica_acks is None  # the primary's AOF alone
    # The worker's own defaults are the same numbers.
    assert (RETRY_BASE_MS, RETRY_MAX_MS, LEASE_MS) == (60_000, 3_600_000, 60_000)


def test_auto_top_up_timings_from_the_environment() -> None:
    settings = WalletSettings.from_env(
        {
            "OBOL_TOP_UP_RETRY_BASE_SECONDS": "5",
            "OBOL_TOP_UP_RETRY_MAX_SECONDS": "300",
            "OBOL_TOP_UP_LEASE_SECONDS": "20",
        }
    )
    assert settings.top_up_retry_base_ms == 5_000
    assert settings.top_up_retry_max_ms == 300_000
    assert settings.top_up_lease_ms == 20_000


def test_replica_acks_from_the_environment() -> None:
    one = WalletSettings.from_env({"OBOL_REDIS_REPLICA_ACKS": "1"})
    assert one.replica_acks == ReplicaAcks(replicas=1, timeout_ms=100)
    two = WalletSettings.from_env(
        {"OBOL_REDIS_REPLICA_ACKS": "2", "OBOL_REDIS_REPLICA_ACK_TIMEOUT_MS": "250"}
    )
    assert two.replica_acks == ReplicaAcks(replicas=2, timeout_ms=250)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OBOL_REDIS_REPLICA_ACKS": "-1"}, "OBOL_REDIS_REPLICA_ACKS"),
        ({"OBOL_REDIS_REPLICA_ACK_TIMEOUT_MS": "0"}, "OBOL_REDIS_REPLICA_ACK_TIMEOUT_MS"),
        ({"OBOL_TOP_UP_RETRY_BASE_SECONDS": "0"}, "OBOL_TOP_UP_RETRY_BASE_SECONDS"),
        ({"OBOL_TOP_UP_LEASE_SECONDS": "soon"}, "OBOL_TOP_UP_LEASE_SECONDS"),
        (
            {"OBOL_TOP_UP_RETRY_BASE_SECONDS": "600", "OBOL_TOP_UP_RETRY_MAX_SECONDS": "60"},
            "OBOL_TOP_UP_RETRY_MAX_SECONDS",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        WalletSettings.from_env(environ)

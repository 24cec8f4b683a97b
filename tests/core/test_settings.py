import pytest

from obol_core.apikeys import Scope, hash_api_key
from obol_core.settings import (
    AuthMode,
    CommonSettings,
    LogFormat,
    MigrationMode,
    SettingsError,
    env_bool,
    env_duration_seconds,
    env_int,
)

DIGEST = hash_api_key("obol_test")
KEYS = f"ops:admin:{DIGEST}"


def load(**env: str) -> CommonSettings:
    return CommonSettings.from_env("wallet", 50051, "OBOL_WALLET_PORT", environ=env)


def test_defaults() -> None:
    settings = load(OBOL_API_KEYS=KEYS)
    assert settings.service_name == "wallet"
    assert settings.host == "0.0.0.0"
    assert settings.port == 50051
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.redis_cluster is False
    assert settings.auth_mode is AuthMode.REQUIRED
    assert settings.log_level == "info"
    assert settings.log_format is LogFormat.JSON
    assert settings.otlp_endpoint is None
    assert settings.shutdown_grace_seconds == 10
    assert settings.shutdown_delay_seconds == 0
    assert settings.client_deadline_seconds == 5
    assert settings.readiness_interval_seconds == 2
    assert settings.migrations is MigrationMode.APPLY
    assert [(k.name, k.scope, k.digest) for k in settings.api_keys] == [
        ("ops", Scope.ADMIN, DIGEST)
    ]


def test_everything_set() -> None:
    settings = load(
        OBOL_API_KEYS=f" ops:admin:{DIGEST} , ingest:ingest:{hash_api_key('b').upper()},",
        OBOL_HOST="127.0.0.1",
        OBOL_WALLET_PORT="6000",
        DATABASE_URL="postgresql://localhost/obol",
        REDIS_URL="redis://localhost:6379/0",
        OBOL_REDIS_CLUSTER="yes",
        OBOL_LOG_LEVEL="DEBUG",
        OBOL_LOG_FORMAT="console",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317",
        OBOL_SHUTDOWN_GRACE_SECONDS="1.5s",
        OBOL_SHUTDOWN_DELAY_SECONDS="0",
        OBOL_CLIENT_DEADLINE_SECONDS="250ms",
        OBOL_READINESS_INTERVAL_SECONDS="1m",
        OBOL_MIGRATIONS="verify",
    )
    assert settings.port == 6000
    assert settings.require_database_url() == "postgresql://localhost/obol"
    assert settings.require_redis_url() == "redis://localhost:6379/0"
    assert settings.redis_cluster is True
    assert settings.log_level == "debug"
    assert settings.log_format is LogFormat.CONSOLE
    assert settings.otlp_endpoint == "http://collector:4317"
    assert settings.shutdown_grace_seconds == 1.5
    assert settings.client_deadline_seconds == 0.25
    assert settings.readiness_interval_seconds == 60
    assert settings.migrations is MigrationMode.VERIFY
    assert [k.scope for k in settings.api_keys] == [Scope.ADMIN, Scope.INGEST]
    assert settings.api_keys[1].digest == hash_api_key("b")


def test_blank_values_take_defaults() -> None:
    settings = load(OBOL_API_KEYS=KEYS, OBOL_WALLET_PORT="  ", OTEL_EXPORTER_OTLP_ENDPOINT="")
    assert settings.port == 50051
    assert settings.otlp_endpoint is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OBOL_WALLET_PORT": "abc"},
            "OBOL_WALLET_PORT must be an integer between 1 and 65535, got 'abc'",
        ),
        (
            {"OBOL_WALLET_PORT": "70000"},
            "OBOL_WALLET_PORT must be an integer between 1 and 65535, got '70000'",
        ),
        ({"OBOL_AUTH": "maybe"}, "OBOL_AUTH must be one of required, disabled, got 'maybe'"),
        ({"OBOL_LOG_FORMAT": "xml"}, "OBOL_LOG_FORMAT must be one of json, console"),
        ({"OBOL_LOG_LEVEL": "loud"}, "OBOL_LOG_LEVEL must be one of debug, info"),
        ({"OBOL_REDIS_CLUSTER": "2"}, "OBOL_REDIS_CLUSTER must be a boolean"),
        ({"OBOL_SHUTDOWN_GRACE_SECONDS": "-1"}, "OBOL_SHUTDOWN_GRACE_SECONDS must be a duration"),
        ({"OBOL_CLIENT_DEADLINE_SECONDS": "0"}, "OBOL_CLIENT_DEADLINE_SECONDS must be a duration"),
        ({"OBOL_READINESS_INTERVAL_SECONDS": "1e3"}, "OBOL_READINESS_INTERVAL_SECONDS"),
        ({"OBOL_MIGRATIONS": "skip"}, "OBOL_MIGRATIONS must be one of apply, verify, got 'skip'"),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(OBOL_API_KEYS=KEYS, **env)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("ops:admin", "entry 1 must look like name:scope:sha256hex"),
        (f"ops:root:{DIGEST}", "unknown scope 'root'"),
        ("ops:admin:abc", "digest must be 64 lowercase hex characters"),
        (f"ops:admin:{DIGEST},ops:read:{hash_api_key('x')}", "duplicate key names: ops"),
        (f"a:admin:{DIGEST},b:read:{DIGEST}", "the same key digest is configured twice"),
        (f"bad name:admin:{DIGEST}", "invalid key name"),
    ],
)
def test_api_key_errors(keys: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(OBOL_API_KEYS=keys)
    assert str(info.value).startswith("OBOL_API_KEYS is invalid")
    assert message in str(info.value)


def test_auth_required_without_keys_fails_fast() -> None:
    with pytest.raises(SettingsError, match="OBOL_API_KEYS is empty but OBOL_AUTH=required"):
        load()
    assert load(OBOL_AUTH="disabled").auth_mode is AuthMode.DISABLED


def test_required_urls() -> None:
    settings = load(OBOL_API_KEYS=KEYS)
    with pytest.raises(SettingsError, match="DATABASE_URL is required by wallet"):
        settings.require_database_url()
    with pytest.raises(SettingsError, match="REDIS_URL is required by wallet"):
        settings.require_redis_url()


def test_helpers() -> None:
    env = {"A": "42", "B": "off", "C": "2h", "D": "-3"}
    assert env_int("A", 1, environ=env) == 42
    assert env_int("MISSING", 7, environ=env) == 7
    assert env_int("D", 0, environ=env) == -3
    with pytest.raises(SettingsError, match="D must be an integer >= 0, got '-3'"):
        env_int("D", 0, min_value=0, environ=env)
    assert env_bool("B", True, environ=env) is False
    assert env_duration_seconds("C", 1, environ=env) == 7200


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBOL_AUTH", "disabled")
    monkeypatch.setenv("OBOL_COSTS_PORT", "7001")
    settings = CommonSettings.from_env("costs", 50053, "OBOL_COSTS_PORT")
    assert settings.port == 7001

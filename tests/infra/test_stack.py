"""The `stack` fixture's engine, run against the fake services (the real ones are exercised
by the tests that request `stack`)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from obol_cli.embedded import EmbeddedPostgres
from obol_cli.health import grpc_serving, http_ok
from obol_cli.launcher import ServiceStartError
from obol_core.apikeys import hash_api_key

from .obol_process import FAKES
from .stack import running_stack


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTHONPATH", str(FAKES))
    monkeypatch.setenv("FAKE_STATE_DIR", str(tmp_path))
    return tmp_path


async def test_running_stack_starts_healthy_services_on_a_fresh_database(
    embedded_postgres: EmbeddedPostgres, redis_url: str, fakes: Path
) -> None:
    log = fakes / "services.log"
    with running_stack(embedded_postgres, redis_url, log) as stack:
        assert grpc_serving(stack.addresses["wallet"])
        assert http_ok(stack.portal_url + "healthz")
        assert stack.database_url.rsplit("/", 1)[1].startswith("stack_")
        conn = await asyncpg.connect(stack.database_url)
        await conn.close()
        seen = json.loads((fakes / "costs.env.json").read_text())
        assert seen["OBOL_API_KEYS"] == f"tests:admin:{hash_api_key(stack.api_key)}"
        assert seen["DATABASE_URL"] == stack.database_url
        assert seen["REDIS_URL"] == redis_url
    assert "wallet   | fake wallet listening" in log.read_text()
    assert "wallet   | fake wallet got SIGTERM" in log.read_text()


def test_running_stack_failure_names_the_service(
    embedded_postgres: EmbeddedPostgres,
    redis_url: str,
    fakes: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "portal")
    with (
        pytest.raises(ServiceStartError, match="portal exited with code 3") as failure,
        running_stack(embedded_postgres, redis_url, fakes / "services.log"),
    ):
        pass
    assert "portal: boom, cannot start" in str(failure.value)

"""`obol apikey create`, `obol migrate` and argument handling."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from obol_cli.commands import migrate
from obol_cli.services import SERVICES, Kind, ServiceDef
from obol_core.apikeys import API_KEY_PREFIX, hash_api_key, parse_api_keys

from .obol_process import FAKES


def obol(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "obol_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_apikey_create_prints_the_key_once_and_its_entry() -> None:
    result = obol("apikey", "create", "--name", "backend", "--scope", "ingest")
    assert result.returncode == 0, result.stderr
    key, entry = result.stdout.splitlines()
    assert key.startswith(API_KEY_PREFIX)
    assert entry == f"backend:ingest:{hash_api_key(key)}"
    assert parse_api_keys(entry)[0].name == "backend"
    assert "OBOL_API_KEYS" in result.stderr


def test_apikey_create_rejects_bad_input() -> None:
    bad_name = obol("apikey", "create", "--name", "two words", "--scope", "read")
    assert bad_name.returncode == 1
    assert "obol: error: invalid key name" in bad_name.stderr
    assert bad_name.stdout == ""
    bad_scope = obol("apikey", "create", "--name", "x", "--scope", "root")
    assert bad_scope.returncode == 2
    assert "invalid choice: 'root'" in bad_scope.stderr


async def test_migrate_applies_each_service_schema_once(fresh_database: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(FAKES), "DATABASE_URL": fresh_database}
    first = obol("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert (
        "obol: wallet (schema fakewallet): applied 0001_accounts.sql, 0002_names.sql"
        in first.stdout
    )
    assert "obol: pricing (schema fakepricing): applied 0001_things.sql" in first.stdout
    second = obol("migrate", env=env)
    assert "obol: wallet (schema fakewallet): up to date" in second.stdout

    conn = await asyncpg.connect(fresh_database)
    try:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'fakewallet' AND table_name = 'accounts' ORDER BY 1"
        )
    finally:
        await conn.close()
    assert [c["column_name"] for c in columns] == ["id", "name"]


def test_services_without_a_schema_module_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = ServiceDef("ghost", "obol_ghost_service", "OBOL_GHOST_PORT", 1, Kind.GRPC)
    monkeypatch.setattr(migrate, "SERVICES", (*SERVICES, unknown))
    assert "ghost" not in [s.service for s in migrate.service_schemas()]
    assert "wallet" in [s.service for s in migrate.service_schemas()]


def test_migrate_needs_a_database() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = obol("migrate", env=env)
    assert result.returncode == 1
    assert "obol: error: no database: set DATABASE_URL or pass --database-url" in result.stderr


def test_migrate_reports_an_unreachable_database(fresh_database: str) -> None:
    unreachable = fresh_database.rsplit(":", 1)[0] + ":1/nowhere"
    result = obol("migrate", "--database-url", unreachable, env={**os.environ})
    assert result.returncode == 1
    assert "obol: error: cannot connect to the database" in result.stderr


def test_migrate_grant_to_refuses_a_bad_or_unknown_role(fresh_database: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(FAKES), "DATABASE_URL": fresh_database}
    bad = obol("migrate", "--grant-to", "Robert'); DROP TABLE x;--", env=env)
    assert bad.returncode == 1
    assert "obol: error: --grant-to: invalid role name" in bad.stderr
    assert bad.stdout == ""  # refused before connecting: nothing migrated
    unknown = obol("migrate", "--grant-to", "no_such_role", env=env)
    assert unknown.returncode == 1
    assert "obol: error: --grant-to: role no_such_role does not exist" in unknown.stderr

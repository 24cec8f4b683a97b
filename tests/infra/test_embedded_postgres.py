"""EmbeddedPostgres: a real server, started, used, stopped and restarted on its data."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import asyncpg
import pytest

from obol_cli.embedded import EmbeddedPostgres, EmbeddedServerError, free_port

from .helpers import alive, tree


async def fetchval(dsn: str, query: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_session_server_is_configured_for_obol(postgres_url: str) -> None:
    assert postgres_url.startswith("postgres://postgres@127.0.0.1:")
    assert postgres_url.endswith("/obol")
    assert await fetchval(postgres_url, "SELECT current_database()") == "obol"
    assert await fetchval(postgres_url, "SHOW fsync") == "on"
    assert await fetchval(postgres_url, "SHOW synchronous_commit") == "on"
    assert await fetchval(postgres_url, "SHOW listen_addresses") == "127.0.0.1"
    assert await fetchval(postgres_url, "SHOW max_connections") == "200"
    assert await fetchval(postgres_url, "SHOW TimeZone") == "UTC"


def test_runs_as_unprivileged_user_when_root(embedded_postgres: EmbeddedPostgres) -> None:
    import psutil

    assert embedded_postgres.pid is not None
    owner = psutil.Process(embedded_postgres.pid).username()
    if os.geteuid() == 0:
        assert owner == "obol-pg"
    else:
        assert owner == pwd.getpwuid(os.geteuid()).pw_name


async def test_data_survives_stop_and_start(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", free_port())
    with postgres:
        conn = await asyncpg.connect(postgres.url)
        await conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
        await conn.close()
        pids = tree(postgres.pid or 0)
        assert len(pids) > 1  # postmaster and its background workers
    assert postgres.pid is None
    assert not [p for p in pids if alive(p)]

    postgres.port = free_port()  # a restart may even use another port
    with postgres:
        assert await fetchval(postgres.url, "SELECT v FROM t") == 42


def test_start_and_stop_are_idempotent(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", free_port())
    postgres.stop()
    postgres.start()
    pid = postgres.pid
    postgres.start()
    assert postgres.pid == pid
    postgres.stop()
    postgres.stop()
    assert pid is not None and not alive(pid)


def test_interrupted_init_is_redone(tmp_path: Path) -> None:
    (tmp_path / "pg" / "pgdata.init").mkdir(parents=True)
    (tmp_path / "pg" / "pgdata.init" / "garbage").write_text("half-done initdb")
    with EmbeddedPostgres(tmp_path / "pg", free_port()) as postgres:
        assert (postgres.pgdata / "PG_VERSION").exists()
        assert not (tmp_path / "pg" / "pgdata.init").exists()


def test_port_taken_by_another_server_fails_clearly_with_log_tail(
    tmp_path: Path, embedded_postgres: EmbeddedPostgres
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", embedded_postgres.port)
    with pytest.raises(EmbeddedServerError) as failure:
        postgres.start()
    message = str(failure.value)
    assert "exited with code" in message
    assert "last lines of" in message and "postgres.log" in message
    assert "could not" in message  # Postgres's own words, e.g. "could not bind IPv4 address"
    assert postgres.pid is None


def test_refuses_data_dir_of_another_major(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", free_port())
    with postgres:
        pass
    (postgres.pgdata / "PG_VERSION").write_text("9\n")
    with pytest.raises(EmbeddedServerError, match="created by PostgreSQL 9"):
        postgres.start()


async def test_fresh_database_is_empty_and_separate(fresh_database: str, postgres_url: str) -> None:
    assert fresh_database.rsplit("/", 1)[1].startswith("test_")
    await fetchval(fresh_database, "CREATE TABLE only_here (v int)")
    assert await fetchval(fresh_database, "SELECT count(*) FROM only_here") == 0
    assert await fetchval(postgres_url, "SELECT to_regclass('only_here')") is None


def test_create_database_rejects_bad_names(embedded_postgres: EmbeddedPostgres) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        embedded_postgres.create_database("x; DROP DATABASE obol")

"""Forward-only migrations and the readiness check, against a real Postgres."""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from obol_core.postgres import (
    MigrationError,
    apply_migrations,
    check_postgres,
    create_pool,
    verify_migrations,
)


@pytest_asyncio.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(postgres_url, min_size=1, max_size=8, application_name="core-test")
    yield pool
    await pool.close()


@pytest.fixture
def schema() -> str:
    return f"core_{uuid.uuid4().hex[:12]}"


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


BASE = {
    "0001_accounts.sql": "CREATE TABLE accounts (id text PRIMARY KEY, balance bigint NOT NULL);",
    "0002_seed.sql": "INSERT INTO accounts VALUES ('a', 1), ('b', 2);",
}


async def test_applies_in_order_once(pool: asyncpg.Pool, schema: str, tmp_path: Path) -> None:
    migrations = write(tmp_path / "m", BASE)
    assert await apply_migrations(pool, schema=schema, migrations=migrations) == [
        "0001_accounts.sql",
        "0002_seed.sql",
    ]
    assert await apply_migrations(pool, schema=schema, migrations=migrations) == []
    # Unqualified names in migrations land in the service's schema.
    assert await pool.fetchval(f"SELECT sum(balance) FROM {schema}.accounts") == 3
    rows = await pool.fetch(
        f"SELECT version, name, checksum, applied_at FROM {schema}.schema_migrations ORDER BY 1"
    )
    assert [(r["version"], r["name"]) for r in rows] == [("0001", "accounts"), ("0002", "seed")]
    assert all(len(r["checksum"]) == 64 and r["applied_at"] is not None for r in rows)

    write(migrations, {"0003_more.sql": "ALTER TABLE accounts ADD COLUMN note text;"})
    assert await apply_migrations(pool, schema=schema, migrations=migrations) == ["0003_more.sql"]


async def test_changed_migration_is_refused(
    pool: asyncpg.Pool, schema: str, tmp_path: Path
) -> None:
    migrations = write(tmp_path / "m", BASE)
    await apply_migrations(pool, schema=schema, migrations=migrations)
    write(migrations, {"0002_seed.sql": "INSERT INTO accounts VALUES ('c', 3);"})
    with pytest.raises(MigrationError, match=r"0002_seed.sql changed after it was applied"):
        await apply_migrations(pool, schema=schema, migrations=migrations)


async def test_missing_migration_is_refused(
    pool: asyncpg.Pool, schema: str, tmp_path: Path
) -> None:
    migrations = write(tmp_path / "m", BASE)
    await apply_migrations(pool, schema=schema, migrations=migrations)
    (migrations / "0002_seed.sql").unlink()
    with pytest.raises(MigrationError, match=r"migration 0002 is recorded as applied .* missing"):
        await apply_migrations(pool, schema=schema, migrations=migrations)


async def test_out_of_order_migration_is_refused(
    pool: asyncpg.Pool, schema: str, tmp_path: Path
) -> None:
    migrations = write(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 3;"})
    await apply_migrations(pool, schema=schema, migrations=migrations)
    write(migrations, {"0002_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match=r"0002_b.sql is numbered below 0003"):
        await apply_migrations(pool, schema=schema, migrations=migrations)


async def test_failed_migration_rolls_back_alone(
    pool: asyncpg.Pool, schema: str, tmp_path: Path
) -> None:
    migrations = write(
        tmp_path / "m",
        {
            **BASE,
            "0003_broken.sql": "CREATE TABLE half (id int); SELECT no_such_column FROM accounts;",
        },
    )
    with pytest.raises(MigrationError, match=r"0003_broken.sql failed") as info:
        await apply_migrations(pool, schema=schema, migrations=migrations)
    assert isinstance(info.value.__cause__, asyncpg.PostgresError)
    versions = await pool.fetch(f"SELECT version FROM {schema}.schema_migrations ORDER BY 1")
    assert [r["version"] for r in versions] == ["0001", "0002"]
    assert await pool.fetchval("SELECT to_regclass($1)", f"{schema}.half") is None
    write(migrations, {"0003_broken.sql": "CREATE TABLE half (id int);"})
    assert await apply_migrations(pool, schema=schema, migrations=migrations) == ["0003_broken.sql"]


async def test_concurrent_starters_apply_each_migration_once(
    postgres_url: str, schema: str, tmp_path: Path
) -> None:
    # A migration that would fail if it ran twice.
    files = {f"{n:04d}_step.sql": f"CREATE TABLE t{n} (id int);" for n in range(1, 9)}
    migrations = write(tmp_path / "m", files)
    pools = [await create_pool(postgres_url, min_size=1, max_size=1) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(apply_migrations(p, schema=schema, migrations=migrations) for p in pools)
        )
    finally:
        for p in pools:
            await p.close()
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(files)


async def test_bad_names_are_refused(pool: asyncpg.Pool, tmp_path: Path) -> None:
    migrations = write(tmp_path / "m", {"1_init.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match=r"must be named NNNN_name.sql"):
        await apply_migrations(pool, schema="core_names", migrations=migrations)
    duplicate = write(tmp_path / "d", {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="share version 0001"):
        await apply_migrations(pool, schema="core_names", migrations=duplicate)
    with pytest.raises(ValueError, match="invalid schema name"):
        await apply_migrations(pool, schema='x"; DROP', migrations=migrations)


async def test_search_path_pool(postgres_url: str, schema: str, tmp_path: Path) -> None:
    setup = await create_pool(postgres_url)
    try:
        await apply_migrations(setup, schema=schema, migrations=write(tmp_path / "m", BASE))
    finally:
        await setup.close()
    pool = await create_pool(postgres_url, search_path=schema)
    try:
        assert await pool.fetchval("SELECT count(*) FROM accounts") == 2
    finally:
        await pool.close()


async def test_check_postgres(pool: asyncpg.Pool, postgres_url: str) -> None:
    await check_postgres(pool)
    unreachable = await create_pool(postgres_url, min_size=0, max_size=1)
    await unreachable.close()
    with pytest.raises(asyncpg.InterfaceError):
        await check_postgres(unreachable)
    busy = await create_pool(postgres_url, min_size=1, max_size=1)
    try:
        async with busy.acquire():
            with pytest.raises(TimeoutError):
                await check_postgres(busy, timeout_seconds=0.2)
    finally:
        await busy.close()


async def test_verify_refuses_a_schema_until_every_migration_is_applied(
    pool: asyncpg.Pool, schema: str, tmp_path: Path
) -> None:
    migrations = write(tmp_path / "m", BASE)
    with pytest.raises(MigrationError, match=f"schema {schema} has no migration history"):
        await verify_migrations(pool, schema=schema, migrations=migrations)
    await apply_migrations(pool, schema=schema, migrations=migrations)
    await verify_migrations(pool, schema=schema, migrations=migrations)

    write(migrations, {"0003_more.sql": "ALTER TABLE accounts ADD COLUMN note text;"})
    with pytest.raises(
        MigrationError, match=re.escape("lacks migrations 0003_more.sql: run `obol migrate`")
    ):
        await verify_migrations(pool, schema=schema, migrations=migrations)
    # Verifying changed nothing: the migration is still pending, the column absent.
    assert await apply_migrations(pool, schema=schema, migrations=migrations) == ["0003_more.sql"]

    (migrations / "0001_accounts.sql").write_text("CREATE TABLE other (id text);")
    with pytest.raises(
        MigrationError, match=re.escape("0001_accounts.sql changed after it was applied")
    ):
        await verify_migrations(pool, schema=schema, migrations=migrations)

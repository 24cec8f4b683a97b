"""Postgres: connection pools, forward-only schema migrations, readiness.

Migrations are `NNNN_name.sql` files (four digits, then a lowercase name). Each runs in
its own transaction with `search_path` set to the service's schema (then `public`), and is
recorded in `<schema>.schema_migrations` with a SHA-256 checksum of the file. Concurrent
starters serialize on an advisory lock keyed on the schema name. A recorded
migration whose file disappeared or changed, or a new file numbered below the latest
applied one, stops startup with `MigrationError`: history is never rewritten, a fix is a
new migration. Statements that cannot run inside a transaction (`CREATE INDEX
CONCURRENTLY`) are not supported.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from .settings import MigrationMode

__all__ = [
    "MigrationError",
    "Queryable",
    "apply_migrations",
    "check_postgres",
    "checked_identifier",
    "create_pool",
    "grant_row_privileges",
    "prepare_schema",
    "verify_migrations",
]

Queryable: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record] "
    "| asyncpg.Pool[asyncpg.Record]"
)
"""Anything to run a query on: a connection, a pooled connection (inside `pool.acquire()`
or a transaction) or the pool itself. For annotations only."""

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_log = structlog.get_logger("obol.postgres")


class MigrationError(Exception):
    """The migration history and the migration files disagree, or a migration failed."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float = 30.0,
    application_name: str | None = None,
    search_path: str | None = None,
) -> asyncpg.Pool[asyncpg.Record]:
    """A pool whose statements time out after `command_timeout` seconds.

    `search_path` names the service's schema: its connections then resolve unqualified
    names there first, then in `public`.
    """
    server_settings: dict[str, str] = {}
    if application_name:
        server_settings["application_name"] = application_name
    if search_path is not None:
        server_settings["search_path"] = f'"{_checked_schema(search_path)}", public'
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        server_settings=server_settings or None,
    )


def checked_identifier(name: str, what: str) -> str:
    """`name`, if it is a plain lowercase SQL identifier (safe to quote into SQL as is);
    else ValueError naming `what` it was meant to be."""
    if not _IDENTIFIER_RE.match(name):
        raise ValueError(f"invalid {what} {name!r} (lowercase letters, digits, '_')")
    return name


def _checked_schema(schema: str) -> str:
    return checked_identifier(schema, "schema name")


async def check_postgres(
    pool: asyncpg.Pool[asyncpg.Record], *, timeout_seconds: float = 2.0
) -> None:
    """Readiness: a connection can be had and answers `SELECT 1` within the timeout."""
    async with asyncio.timeout(timeout_seconds):
        await pool.fetchval("SELECT 1")


@dataclass(frozen=True)
class _Migration:
    version: str
    name: str
    path: Path
    checksum: str

    @property
    def label(self) -> str:
        return self.path.name


def _load(directory: Path) -> list[_Migration]:
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    migrations: dict[str, _Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files must be named NNNN_name.sql")
        version, name = match.groups()
        if version in migrations:
            raise MigrationError(
                f"{path.name} and {migrations[version].label} share version {version}"
            )
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        migrations[version] = _Migration(version, name, path, checksum)
    return [migrations[v] for v in sorted(migrations)]


def _lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory lock key for the schema's migrations."""
    digest = hashlib.sha256(f"obol.migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def apply_migrations(
    pool: asyncpg.Pool[asyncpg.Record], *, schema: str, migrations: Path
) -> list[str]:
    """Apply pending migrations in order; return the file names applied by this call.

    Each migration gets its own transaction, which first takes a transaction-level
    advisory lock for the schema and re-reads the history: a concurrent starter waits,
    then finds the migration recorded and moves on. The lock cannot leak, since it ends
    with the transaction.
    """
    _checked_schema(schema)
    files = _load(migrations)
    table = f'"{schema}".schema_migrations'
    applied: list[str] = []
    async with pool.acquire() as conn:
        while True:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
                # Checked first: CREATE SCHEMA needs the CREATE privilege on the database
                # even when the schema exists (e.g. created beforehand by a DBA).
                if not await conn.fetchval(
                    "SELECT true FROM pg_namespace WHERE nspname = $1", schema
                ):
                    await conn.execute(f'CREATE SCHEMA "{schema}"')
                await conn.execute(
                    f"""CREATE TABLE IF NOT EXISTS {table} (
                        version text PRIMARY KEY,
                        name text NOT NULL,
                        checksum text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())"""
                )
                rows = await conn.fetch(f"SELECT version, checksum FROM {table}")
                pending = _pending(files, {r["version"]: r["checksum"] for r in rows}, schema)
                if not pending:
                    return applied
                migration = pending[0]
                await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
                try:
                    await conn.execute(migration.path.read_text(encoding="utf-8"))
                except asyncpg.PostgresError as err:
                    raise MigrationError(
                        f"migration {migration.label} failed in schema {schema}: {err}"
                    ) from err
                await conn.execute(
                    f"INSERT INTO {table} (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            _log.info("migration applied", schema=schema, migration=migration.label)
            applied.append(migration.label)


async def grant_row_privileges(conn: Queryable, *, schema: str, role: str) -> None:
    """Let `role` read and write the rows of `schema`'s tables, now and in the tables
    later migrations create (run as the schema's owner), and nothing else: no CREATE,
    ALTER, DROP or TRUNCATE. Services can then run as `role` with OBOL_MIGRATIONS=verify."""
    s, r = f'"{_checked_schema(schema)}"', f'"{checked_identifier(role, "role name")}"'
    await conn.execute(
        f"""GRANT USAGE ON SCHEMA {s} TO {r};
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r};
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r};
        ALTER DEFAULT PRIVILEGES IN SCHEMA {s}
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r};
        ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT ON SEQUENCES TO {r};"""
    )


async def prepare_schema(
    pool: asyncpg.Pool[asyncpg.Record], mode: MigrationMode, *, schema: str, migrations: Path
) -> None:
    """What a process does with its schema at start, as OBOL_MIGRATIONS says: apply the
    pending migrations, or only verify that none is pending."""
    if mode is MigrationMode.APPLY:
        await apply_migrations(pool, schema=schema, migrations=migrations)
    else:
        await verify_migrations(pool, schema=schema, migrations=migrations)


async def verify_migrations(
    pool: asyncpg.Pool[asyncpg.Record], *, schema: str, migrations: Path
) -> None:
    """Raise MigrationError unless every migration is applied, unchanged (what a service
    run with OBOL_MIGRATIONS=verify checks at start: reads only, no DDL, no lock)."""
    _checked_schema(schema)
    files = _load(migrations)
    async with pool.acquire() as conn:
        history = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".schema_migrations')
        if history is None:
            raise MigrationError(
                f"schema {schema} has no migration history: run `obol migrate` first"
            )
        rows = await conn.fetch(f'SELECT version, checksum FROM "{schema}".schema_migrations')
    if pending := _pending(files, {r["version"]: r["checksum"] for r in rows}, schema):
        labels = ", ".join(m.label for m in pending)
        raise MigrationError(f"schema {schema} lacks migrations {labels}: run `obol migrate` first")


def _pending(files: list[_Migration], recorded: dict[str, str], schema: str) -> list[_Migration]:
    by_version = {m.version: m for m in files}
    for version, checksum in sorted(recorded.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"migration {version} is recorded as applied in schema {schema} "
                "but its file is missing"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {migration.label} changed after it was applied to schema {schema}; "
                "applied migrations are immutable, add a new migration instead"
            )
    latest = max(recorded, default="")
    pending = [m for m in files if m.version not in recorded]
    for migration in pending:
        if migration.version < latest:
            raise MigrationError(
                f"migration {migration.label} is numbered below {latest}, the latest applied "
                f"to schema {schema}; renumber it after {latest}"
            )
    return pending

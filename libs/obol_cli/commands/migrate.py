"""`obol migrate`: apply every service's Postgres migrations against DATABASE_URL.

A service takes part when it has a `obol_<name>.schema` module defining `SCHEMA` (its
Postgres schema) and `MIGRATIONS_DIR`; services apply the same migrations at start-up, so
this is for preparing a database ahead of a deploy.

With `--grant-to ROLE` (or $OBOL_RUNTIME_ROLE), it then lets that existing role read and
write the rows of every service schema, now and in tables later migrations add, and
nothing else: the services can run as it with OBOL_MIGRATIONS=verify (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from obol_core.postgres import (
    MigrationError,
    apply_migrations,
    checked_identifier,
    create_pool,
    grant_row_privileges,
)

from ..errors import ObolCliError
from ..services import SERVICES


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "migrate", help="apply every service's database migrations", description=__doc__
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="Postgres DSN (default: $DATABASE_URL)",
    )
    parser.add_argument(
        "--grant-to",
        metavar="ROLE",
        default=os.environ.get("OBOL_RUNTIME_ROLE") or None,
        help="an existing role to grant row privileges on every service schema "
        "(default: $OBOL_RUNTIME_ROLE)",
    )
    parser.set_defaults(handler=migrate)


@dataclass(frozen=True)
class ServiceSchema:
    service: str
    schema: str
    migrations: Path


def service_schemas() -> list[ServiceSchema]:
    """The schema of every registered service that has a `schema` module."""
    found: list[ServiceSchema] = []
    for service in SERVICES:
        module_name = f"{service.module}.schema"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name in (service.module, module_name):
                continue
            raise
        found.append(ServiceSchema(service.name, module.SCHEMA, Path(module.MIGRATIONS_DIR)))
    return found


def migrate(args: argparse.Namespace) -> int:
    if not args.database_url:
        raise ObolCliError("no database: set DATABASE_URL or pass --database-url")
    if args.grant_to is not None:
        try:
            checked_identifier(args.grant_to, "role name")
        except ValueError as err:
            raise ObolCliError(f"--grant-to: {err}") from None
    asyncio.run(_migrate(args.database_url, args.grant_to))
    return 0


async def _migrate(database_url: str, grant_to: str | None) -> None:
    schemas = service_schemas()
    try:
        pool = await create_pool(database_url, min_size=1, max_size=1, application_name="obol")
    except (OSError, asyncpg.PostgresError) as err:
        raise ObolCliError(f"cannot connect to the database: {err}") from None
    try:
        for item in schemas:
            try:
                applied = await apply_migrations(
                    pool, schema=item.schema, migrations=item.migrations
                )
            except MigrationError as err:
                raise ObolCliError(f"{item.service}: {err}") from None
            done = f"applied {', '.join(applied)}" if applied else "up to date"
            print(f"obol: {item.service} (schema {item.schema}): {done}", flush=True)
        if grant_to is not None:
            await _grant(pool, schemas, grant_to)
    finally:
        await pool.close()


async def _grant(
    pool: asyncpg.Pool[asyncpg.Record], schemas: list[ServiceSchema], role: str
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role):
            raise ObolCliError(
                f"--grant-to: role {role} does not exist; create it first "
                f"(e.g. CREATE ROLE {role} LOGIN PASSWORD '...')"
            )
        for item in schemas:
            await grant_row_privileges(conn, schema=item.schema, role=role)
    names = ", ".join(item.schema for item in schemas)
    print(f"obol: granted {role} row privileges on schemas {names}", flush=True)

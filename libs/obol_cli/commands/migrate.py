"""`obol migrate`: apply every service's Postgres migrations against DATABASE_URL.

A service takes part when it has a `obol_<name>.schema` module defining `SCHEMA` (its
Postgres schema) and `MIGRATIONS_DIR`; services apply the same migrations at start-up, so
this is for preparing a database ahead of a deploy.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from obol_core.postgres import MigrationError, apply_migrations, create_pool

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
    asyncio.run(_migrate(args.database_url))
    return 0


async def _migrate(database_url: str) -> None:
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
    finally:
        await pool.close()

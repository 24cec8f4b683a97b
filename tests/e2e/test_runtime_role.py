"""Obol's services on a database role without DDL rights: `obol migrate --grant-to` runs as
the owner, then every service and the write-behind, as real processes with
OBOL_MIGRATIONS=verify, run as the runtime role, which can read and write rows and
nothing else."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import asyncpg
import grpc.aio
import pytest
from infra.cli import run_obol
from infra.stack import running_stack
from obol.costs.v1 import costs_pb2, costs_pb2_grpc
from obol.type.v1 import usage_pb2
from obol.wallet.v1 import wallet_pb2_grpc

from obol_cli.embedded import HOST, EmbeddedPostgres, EmbeddedRedis, free_port
from obol_cli.launcher import StackInfo

from .wallet_flow import charged_wallet, written_transactions

ROLE = "obol_runtime"


@pytest.fixture(scope="module")
def runtime_database(embedded_postgres: EmbeddedPostgres) -> str:
    """A new database, the runtime role, then `obol migrate --grant-to` as the owner: the
    runtime role's DSN."""
    name = f"runtime_{uuid.uuid4().hex[:12]}"
    owner_url = embedded_postgres.create_database(name)

    async def prepare() -> None:
        conn = await asyncpg.connect(owner_url)
        try:
            if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", ROLE):
                await conn.execute(f"CREATE ROLE {ROLE} LOGIN")  # roles are cluster-wide
        finally:
            await conn.close()

    asyncio.run(prepare())
    code, output = asyncio.run(
        run_obol(os.environ | {"DATABASE_URL": owner_url}, "migrate", "--grant-to", ROLE)
    )
    assert code == 0, output
    assert f"obol: granted {ROLE} row privileges on schemas wallet, pricing, costs" in output
    return f"postgres://{ROLE}@{HOST}:{embedded_postgres.port}/{name}"


@pytest.fixture(scope="module")
def runtime_stack(
    embedded_postgres: EmbeddedPostgres,
    runtime_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackInfo]:
    directory = tmp_path_factory.mktemp("runtime-stack")
    with (
        EmbeddedRedis(directory / "redis", free_port()) as redis,
        running_stack(
            embedded_postgres,
            redis.url,
            directory / "services.log",
            database_url=runtime_database,
            env={"OBOL_MIGRATIONS": "verify"},
        ) as stack,
    ):
        yield stack


async def test_every_service_runs_as_the_runtime_role(runtime_stack: StackInfo) -> None:
    metadata = (("authorization", f"Bearer {runtime_stack.api_key}"),)
    async with grpc.aio.insecure_channel(runtime_stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        wallet_id, charged = await charged_wallet(wallet, metadata, "runtime")
        listed = await written_transactions(wallet, metadata, wallet_id, 2)
        assert charged.transaction_id in listed  # after the top-up
    async with grpc.aio.insecure_channel(runtime_stack.addresses["costs"]) as channel:
        rated = await costs_pb2_grpc.CostsServiceStub(channel).Rate(
            costs_pb2.RateRequest(
                usage=usage_pb2.Usage(
                    event_type="llm.completion",
                    dimensions={"provider": "openai", "model": "gpt-4o"},
                    quantities={"input_tokens": 1000},
                )
            ),
            metadata=metadata,
        )
        assert rated.cost.amount == 2_500_000  # $2.50 per million input tokens

    conn = await asyncpg.connect(runtime_stack.database_url)
    try:
        users = await conn.fetch(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()"
        )
        assert [u["usename"] for u in users] == [ROLE]  # the services, the worker and us
    finally:
        await conn.close()


async def test_the_runtime_role_changes_rows_only(runtime_stack: StackInfo) -> None:
    conn = await asyncpg.connect(runtime_stack.database_url)
    try:
        refused = [
            "CREATE TABLE wallet.extra (id text)",
            "ALTER TABLE wallet.wallets ADD COLUMN extra text",
            "DROP TABLE wallet.ledger_lines",
            "TRUNCATE wallet.ledger_entries",
            "CREATE SCHEMA extra",
        ]
        for statement in refused:
            with pytest.raises(
                (asyncpg.InsufficientPrivilegeError, asyncpg.InvalidSchemaNameError)
            ):
                await conn.execute(statement)
        # The ledger stays append-only for it too (the tables' triggers).
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM wallet.ledger_entries")
    finally:
        await conn.close()

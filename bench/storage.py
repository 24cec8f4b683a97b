"""Postgres and Redis for a run: embedded servers in a temporary directory (started and
stopped by the bench), or the servers of DATABASE_URL / REDIS_URL when those are set.

Each wallet service gets a fresh database, dropped at the end. A Redis given by REDIS_URL
must be empty: the run measures its ledger streams' backlog and audits every wallet in it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import asyncpg
import redis

from obol_cli.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from obol_cli.errors import ObolCliError

from .progress import say


class BenchError(ObolCliError):
    """The bench could not run (the message says why)."""


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


class Storage:
    def __init__(self, workdir: Path, *, appendfsync: str) -> None:
        self._workdir = workdir
        self._appendfsync = appendfsync
        self._stack = ExitStack()
        self._postgres: EmbeddedPostgres | None = None
        self._redis: EmbeddedRedis | None = None
        self._server_url = os.environ.get("DATABASE_URL", "").strip()
        self.external_postgres = bool(self._server_url)
        self.redis_url = os.environ.get("REDIS_URL", "").strip()
        self.redis_embedded = not self.redis_url
        self._databases: list[str] = []
        self._run = uuid.uuid4().hex[:8]

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        if self._server_url:
            say("Postgres: DATABASE_URL's server (fresh databases are created in it)")
        else:
            self._postgres = EmbeddedPostgres(self._workdir / "postgres", free_port())
            say(f"starting embedded Postgres on 127.0.0.1:{self._postgres.port}")
            self._stack.enter_context(self._postgres)
            self._server_url = self._postgres.url
        if self.redis_url:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=10)
            try:
                keys = int(client.dbsize())
            finally:
                client.close()
            if keys:
                raise BenchError(
                    f"REDIS_URL's database holds {keys} keys; the bench needs an empty one "
                    "(it audits every wallet and ledger stream in it)"
                )
            say("Redis: REDIS_URL (empty database)")
        else:
            server = EmbeddedRedis(
                self._workdir / "redis", free_port(), appendfsync=self._appendfsync
            )
            say(f"starting embedded Redis on 127.0.0.1:{server.port}")
            self._stack.enter_context(server)
            self._redis = server
            self.redis_url = server.url

    def fresh_database(self, label: str) -> str:
        """Create an empty database and return its DSN (dropped when the run ends)."""
        name = f"obol_bench_{label}_{self._run}"
        if self._postgres is not None:
            dsn = self._postgres.create_database(name)
        else:
            try:
                asyncio.run(_admin(self._server_url, f"CREATE DATABASE {name}"))
            except (OSError, asyncpg.PostgresError) as err:
                raise BenchError(f"cannot create database {name}: {err}") from None
            dsn = _with_database(self._server_url, name)
        self._databases.append(name)
        return dsn

    def pids(self) -> dict[str, int]:
        """The embedded servers' processes (Postgres's backends are its descendants)."""
        found: dict[str, int] = {}
        for name, server in (("postgres", self._postgres), ("redis", self._redis)):
            if server is not None and server.pid is not None:
                found[name] = server.pid
        return found

    def postgres_version(self) -> str:
        return asyncio.run(_server_version(self._server_url))

    def redis_version(self) -> str:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=10)
        try:
            return str(client.info("server").get("redis_version", "unknown"))
        finally:
            client.close()

    def _drop_databases(self) -> None:
        for name in self._databases:
            statement = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            try:
                asyncio.run(_admin(self._server_url, statement))
            except (OSError, asyncpg.PostgresError) as err:
                say(f"could not drop database {name}: {err}")
        self._databases.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._postgres is None:  # embedded ones go with their directory
                self._drop_databases()
            if not self.redis_embedded:  # verified empty at the start: leave it so
                client = redis.Redis.from_url(self.redis_url, socket_timeout=30)
                try:
                    client.flushdb()
                finally:
                    client.close()
        finally:
            self._stack.close()

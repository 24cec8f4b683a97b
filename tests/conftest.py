"""Suite-wide fixtures: real Postgres and Redis, started by the suite itself.

Each test session gets its own embedded servers on free ports in temporary directories,
so two runs can go side by side; they are stopped at the end of the session (and by the
kernel if pytest dies, see obol_cli.process).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from infra.stack import running_stack

from obol_cli.embedded import (
    ClientCert,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedRedisCluster,
    ServerTls,
    free_port,
)
from obol_cli.launcher import StackInfo


def _postgres_server(tls: ServerTls | None = None) -> Iterator[EmbeddedPostgres]:
    """A Postgres server of its own. Its data lives in its own temporary directory rather
    than under pytest's basetemp, whose 0700 parents the unprivileged Postgres user (when
    running as root) could not traverse without loosening them."""
    data_dir = Path(tempfile.mkdtemp(prefix="obol-test-postgres-"))
    try:
        with EmbeddedPostgres(data_dir, free_port(), tls=tls) as postgres:
            yield postgres
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """The session's Postgres server (for tests that need to manage databases)."""
    yield from _postgres_server()


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """A Postgres server for this test alone (which may stop and restart it)."""
    yield from _postgres_server()


@pytest.fixture(scope="session")
def postgres_url(embedded_postgres: EmbeddedPostgres) -> str:
    """DSN of database `obol` in the session's Postgres (shared by the whole session)."""
    return embedded_postgres.url


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """The session's Redis server (AOF with appendfsync always, noeviction)."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), free_port()) as redis:
        yield redis


@pytest.fixture(scope="session")
def redis_url(embedded_redis: EmbeddedRedis) -> str:
    """URL of database 0 of the session's Redis (shared by the whole session)."""
    return embedded_redis.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedRedisCluster]:
    """A real Redis Cluster for the session: three masters (no replicas) on free ports, the
    16384 slots split between them, started on first use from the same redis-server binary
    as `embedded_redis`; its data lives in a temporary directory removed at the end, and
    every node is stopped (and by the kernel if pytest dies). `redis_cluster.url` is a
    `redis+cluster://` seed. Tests that use it may flush it (database 0 is all it has)."""
    data_dir = Path(tempfile.mkdtemp(prefix="obol-test-redis-cluster-"))
    try:
        with EmbeddedRedisCluster(data_dir, masters=3) as cluster:
            yield cluster
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def fresh_database(embedded_postgres: EmbeddedPostgres) -> Iterator[str]:
    """DSN of a new, empty database for this test only; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex}"
    dsn = embedded_postgres.create_database(name)
    yield dsn
    embedded_postgres.drop_database(name)


@pytest.fixture(scope="session")
def stack(
    embedded_postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackInfo]:
    """Every Obol service as a real process, healthy, with its own database and Redis.

    Yields addresses (`stack.addresses["wallet"]`, `stack.portal_url`), the storage URLs
    and an admin API key (`stack.api_key`). Service logs: <tmp>/stack*/services.log.
    """
    directory = tmp_path_factory.mktemp("stack")
    with (
        EmbeddedRedis(directory / "redis", free_port()) as redis,
        running_stack(embedded_postgres, redis.url, directory / "services.log") as info,
    ):
        yield info


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throwaway certificate authority the TLS servers' certificates are issued by."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    """Mutual TLS, as files: a server certificate for 127.0.0.1 (and localhost), the CA,
    and a client certificate for user `postgres` that the servers' URLs present."""
    directory = tmp_path_factory.mktemp("tls")
    tls = ServerTls(
        directory / "server.pem",
        directory / "server.key",
        directory / "ca.pem",
        ClientCert(directory / "client.pem", directory / "client.key"),
    )
    assert tls.client is not None
    tls_ca.cert_pem.write_to_path(str(tls.ca_file))
    issued = (
        (tls_ca.issue_cert("127.0.0.1", "localhost"), tls.cert_file, tls.key_file),
        (tls_ca.issue_cert(common_name="postgres"), tls.client.cert_file, tls.client.key_file),
    )
    for cert, cert_file, key_file in issued:
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        key_file.chmod(0o600)  # libpq refuses a client key others can read
    return tls


@pytest.fixture(scope="session")
def tls_postgres(server_tls: ServerTls) -> Iterator[EmbeddedPostgres]:
    """A Postgres that accepts TLS connections only (its URLs verify it: verify-full)."""
    yield from _postgres_server(server_tls)


@pytest.fixture(scope="session")
def tls_redis(
    server_tls: ServerTls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedRedis]:
    """A Redis that serves TLS only (no plain port; its `rediss://` URL verifies it)."""
    with EmbeddedRedis(tmp_path_factory.mktemp("tls-redis"), free_port(), tls=server_tls) as redis:
        yield redis

"""Obol over mutual TLS to both stores: every service, as a real process, against a Redis
that serves TLS only and a Postgres that accepts TLS connections only, both requiring a
client certificate; each server verified against its CA and each client presenting its
certificate through nothing but the URLs (`rediss://...?ssl_ca_certs=&ssl_certfile=
&ssl_keyfile=`, `sslmode=verify-full&sslrootcert=&sslcert=&sslkey=`). Plain, untrusted and
anonymous connections are refused."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import grpc.aio
import pytest
import redis.exceptions
import trustme
from infra.stack import running_stack
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from obol_cli.embedded import EmbeddedPostgres, EmbeddedRedis, ServerTls
from obol_cli.launcher import StackInfo
from obol_core.redis import create_redis

from .wallet_flow import charged_wallet


@pytest.fixture(scope="module")
def tls_stack(
    tls_postgres: EmbeddedPostgres,
    tls_redis: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackInfo]:
    log = tmp_path_factory.mktemp("tls-stack") / "services.log"
    with running_stack(tls_postgres, tls_redis.url, log) as stack:
        yield stack


def _metadata(stack: StackInfo) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.api_key}"),)


async def test_a_charge_goes_through_tls_redis_into_the_tls_postgres_ledger(
    tls_stack: StackInfo, tls_redis: EmbeddedRedis
) -> None:
    metadata = _metadata(tls_stack)
    async with grpc.aio.insecure_channel(tls_stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        wallet_id, _ = await charged_wallet(wallet, metadata, "tls")
        selector = wallet_pb2.WalletSelector(wallet_id=wallet_id)
        got = await wallet.GetWallet(
            wallet_pb2.GetWalletRequest(wallet=selector), metadata=metadata
        )
        assert got.wallet.available.amount == 6_000

    # The write-behind process moves the charge from the Redis stream into the ledger.
    conn = await asyncpg.connect(tls_stack.database_url)
    try:
        for _ in range(100):
            written = await conn.fetchval(
                "SELECT count(*) FROM wallet.ledger_entries WHERE request_id = 'tls-charge'"
            )
            if written:
                break
            await asyncio.sleep(0.1)
        assert written == 1
        # Every connection to the stack's database (the services', the worker's, ours) is
        # encrypted: the server's rules leave no other way in.
        count, all_tls = await conn.fetchrow(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a "
            "JOIN pg_stat_ssl s USING (pid) WHERE a.datname = current_database()"
        )
        assert count > 2 and all_tls
    finally:
        await conn.close()

    # Redis has no plain port; the services hold connections to it all the same.
    client = create_redis(tls_redis.url)
    try:
        connected = await client.client_list()
        assert len(connected) > 2
    finally:
        await client.aclose()


async def test_plain_untrusted_and_anonymous_connections_are_refused(
    tls_postgres: EmbeddedPostgres, tls_redis: EmbeddedRedis, server_tls: ServerTls, tmp_path: Path
) -> None:
    """No TLS; a client that does not trust the servers' CA; a client that trusts it but
    presents no certificate of its own: each is refused, by Postgres and by Redis."""
    stranger = trustme.CA()  # a CA the servers' certificates were not issued by
    stranger_file = tmp_path / "stranger.pem"
    stranger.cert_pem.write_to_path(str(stranger_file))
    ca = quote(str(server_tls.ca_file), safe="")
    postgres = f"postgres://postgres@127.0.0.1:{tls_postgres.port}/postgres"

    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(f"{postgres}?sslmode=disable")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(f"{postgres}?sslmode=verify-full&sslrootcert={stranger_file}")
    with pytest.raises(
        asyncpg.InvalidAuthorizationSpecificationError, match="requires a valid client certificate"
    ):
        await asyncpg.connect(f"{postgres}?sslmode=verify-full&sslrootcert={ca}")
    conn = await asyncpg.connect(tls_postgres.dsn("postgres"))  # with the client certificate
    await conn.close()

    redis_at = f"127.0.0.1:{tls_redis.port}/0"
    refused = [
        create_redis(f"redis://{redis_at}", socket_timeout_seconds=2),
        create_redis(f"rediss://{redis_at}?ssl_ca_certs={quote(str(stranger_file))}"),
        create_redis(f"rediss://{redis_at}?ssl_ca_certs={ca}", socket_timeout_seconds=2),
    ]
    accepted = create_redis(tls_redis.url)  # with the client certificate
    clients = [*refused, accepted]
    try:
        for client in refused:
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.ping()
        assert await accepted.ping()
    finally:
        for client in clients:
            await client.aclose()

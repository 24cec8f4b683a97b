"""The wallet on a Redis Cluster that speaks mutual TLS only (clients, the cluster bus and
replication), as deploy/k8s runs it with a `rediss+cluster://` URL: a race on every master
is still decided in one atomic step, replica acks are confirmed over TLS replication, and
the ledger written behind has exactly what was accepted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from obol.wallet.v1 import wallet_pb2

from obol_cli.embedded import EmbeddedRedisCluster, ServerTls
from obol_core.redis import ReplicaAcks

from ..grpc.harness import selector, usd, wallet_api
from .support import outcomes, private_cluster, wallets_on_every_master


@pytest.fixture
def tls_cluster(server_tls: ServerTls) -> Iterator[EmbeddedRedisCluster]:
    with private_cluster(replicas=1, tls=server_tls) as cluster:
        yield cluster


async def test_races_on_every_master_of_a_tls_cluster_accept_exactly_what_fits(
    tls_cluster: EmbeddedRedisCluster, fresh_database: str
) -> None:
    assert tls_cluster.url.startswith("rediss+cluster://")
    acks = ReplicaAcks(replicas=1, timeout_ms=2_000)
    async with wallet_api("redis", fresh_database, tls_cluster.url, replica_acks=acks) as api:
        wallets = await wallets_on_every_master(api, tls_cluster, funds=5)
        # 20 concurrent Authorize of 3 on each wallet of 5: exactly one each.
        calls = [
            api.stub.Authorize(
                wallet_pb2.AuthorizeRequest(
                    request_id=f"race-{wallet_id}-{attempt}",
                    wallet=selector(wallet_id),
                    amount=usd(3),
                )
            )
            for wallet_id in wallets
            for attempt in range(20)
        ]
        assert await outcomes(calls) == {"OK": 3, "INSUFFICIENT_FUNDS": 57}
        for wallet_id in wallets:
            assert await api.available(wallet_id) == 2

        await api.drain_ledger()
        holds = await api.pool.fetchval(
            "SELECT count(*) FROM wallet.ledger_entries WHERE kind = 'hold'"
        )
        assert holds == len(wallets)

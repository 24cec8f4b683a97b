"""The wallet on a Redis Cluster as the least-privilege ACL user of
deploy/redis/obol-user.acl (made on every node): the cluster client's topology reads,
scripts on every master, WAIT for the replicas, the write-behind's stream reads; no node
refuses anything."""

from __future__ import annotations

from infra.redis_acl import PASSWORD, USER, create_obol_user, refusals
from obol.wallet.v1 import wallet_pb2

from obol_cli.embedded import HOST
from obol_core.redis import ReplicaAcks

from ..grpc.harness import selector, usd, wallet_api
from .support import private_cluster, wallets_on_every_master


async def test_the_wallet_runs_on_a_cluster_as_the_least_privilege_user(
    fresh_database: str,
) -> None:
    acks = ReplicaAcks(replicas=1, timeout_ms=2_000)
    with private_cluster(replicas=1) as cluster:
        for node in cluster.nodes:
            create_obol_user(node.url)
        url = f"redis+cluster://{USER}:{PASSWORD}@{HOST}:{cluster.nodes[0].port}"
        async with wallet_api(
            "redis", fresh_database, url, replica_acks=acks, flush_redis=False
        ) as api:
            for wallet_id in await wallets_on_every_master(api, cluster, funds=5):
                held = await api.stub.Authorize(
                    wallet_pb2.AuthorizeRequest(
                        request_id=f"acl-{wallet_id}", wallet=selector(wallet_id), amount=usd(3)
                    )
                )
                assert held.available.amount == 2
            await api.drain_ledger()
            holds = await api.pool.fetchval(
                "SELECT count(*) FROM wallet.ledger_entries WHERE kind = 'hold'"
            )
            assert holds == len(cluster.masters)
        for node in cluster.nodes:
            assert refusals(node.url) == [], node.port

"""The wallet on a Redis Cluster that speaks TLS only (clients, the cluster bus and
replication), as deploy/k8s runs it with a `rediss+cluster://` URL: a race on every master
is still decided in one atomic step, replica acks are confirmed over TLS replication, and
the ledger written behind reconciles."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc.aio
import pytest
from obol.wallet.v1 import wallet_pb2
from redis.crc import key_slot

from obol_cli.embedded import EmbeddedRedisCluster, ServerTls
from obol_core.redis import ReplicaAcks
from obol_wallet.partitions import keys_for

from ..grpc.harness import PARTITIONS, reason_of, selector, usd, wallet_api

WALLETS_PER_MASTER = 2


@pytest.fixture
def tls_cluster(server_tls: ServerTls) -> Iterator[EmbeddedRedisCluster]:
    data_dir = Path(tempfile.mkdtemp(prefix="obol-test-tls-cluster-"))
    try:
        with EmbeddedRedisCluster(data_dir, masters=3, replicas=1, tls=server_tls) as cluster:
            yield cluster
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_races_on_every_master_of_a_tls_cluster_accept_exactly_what_fits(
    tls_cluster: EmbeddedRedisCluster, fresh_database: str
) -> None:
    assert tls_cluster.url.startswith("rediss+cluster://")
    acks = ReplicaAcks(replicas=1, timeout_ms=2_000)
    async with wallet_api("redis", fresh_database, tls_cluster.url, replica_acks=acks) as api:
        ranges = tls_cluster.slot_ranges()
        on_master: dict[int, list[str]] = {i: [] for i in range(len(ranges))}
        while any(len(found) < WALLETS_PER_MASTER for found in on_master.values()):
            wallet_id = await api.wallet(5)
            slot = key_slot(keys_for(wallet_id, PARTITIONS).wallet.encode())
            master = next(i for i, (first, last) in enumerate(ranges) if first <= slot <= last)
            on_master[master].append(wallet_id)
        wallets = [w for found in on_master.values() for w in found]

        async def authorize(wallet_id: str, attempt: int) -> str:
            request = wallet_pb2.AuthorizeRequest(
                request_id=f"race-{wallet_id}-{attempt}", wallet=selector(wallet_id), amount=usd(3)
            )
            try:
                await api.stub.Authorize(request)
            except grpc.aio.AioRpcError as refused:
                return reason_of(refused)[0]
            return "OK"

        # 20 concurrent Authorize of 3 on each wallet of 5: exactly one each.
        outcomes = await asyncio.gather(
            *(authorize(w, attempt) for w in wallets for attempt in range(20))
        )
        assert Counter(outcomes) == {"OK": len(wallets), "INSUFFICIENT_FUNDS": 19 * len(wallets)}
        for wallet_id in wallets:
            assert await api.available(wallet_id) == 2

        await api.drain_ledger()
        holds = await api.pool.fetchval(
            "SELECT count(*) FROM wallet.ledger_entries"
            " WHERE kind = 'hold' AND wallet_id = ANY($1)",
            wallets,
        )
        assert holds == len(wallets)

"""Resharding under load: a slot holding wallets moves from one master to another (CLUSTER
SETSLOT IMPORTING/MIGRATING, MIGRATE key by key, SETSLOT NODE) while those wallets spend.
Calls that meet the move are answered UNAVAILABLE (DEPENDENCY_UNAVAILABLE: Redis refuses a
multi-key call over a slot half moved with TRYAGAIN, and the client's redirects run out)
and nothing of theirs is applied; retried with the same request ids, every spend happens
exactly once, and the ledger written behind matches."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc
import grpc.aio
import pytest
import redis
from obol.wallet.v1 import wallet_pb2
from redis.crc import key_slot

from obol_cli.embedded import HOST, EmbeddedRedis, EmbeddedRedisCluster
from obol_core.redis import ReplicaAcks
from obol_wallet import ledger_queries
from obol_wallet.partitions import keys_for
from obol_wallet.reconcile import reconcile
from obol_wallet.writebehind import WriteBehind

from ..grpc.harness import PARTITIONS, WalletApi, selector, usd, wallet_api
from .support import DOLLAR

WALLETS = 3
CHARGES = 40
PRICE = DOLLAR // 100
MIGRATE_BATCH = 5  # keys per MIGRATE: the move takes a while, spends run in between


async def wallets_in_one_partition(api: WalletApi, slots: tuple[int, int]) -> list[str]:
    """WALLETS funded wallets sharing one partition (so one slot) served by `slots`."""
    by_partition: dict[int, list[str]] = {}
    while True:
        wallet_id = await api.wallet(10 * DOLLAR)
        keys = keys_for(wallet_id, PARTITIONS)
        if slots[0] <= key_slot(keys.tag.encode()) <= slots[1]:
            found = by_partition.setdefault(keys.partition, [])
            found.append(wallet_id)
            if len(found) == WALLETS:
                return found


def move_slot(slot: int, source: EmbeddedRedis, target: EmbeddedRedis) -> int:
    """Move `slot` as `redis-cli --cluster reshard` does; returns how many keys moved."""
    with (
        redis.Redis(host=HOST, port=source.port) as src,
        redis.Redis(host=HOST, port=target.port) as dst,
    ):
        source_id, target_id = src.cluster("MYID"), dst.cluster("MYID")
        dst.cluster("SETSLOT", slot, "IMPORTING", source_id)
        src.cluster("SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while keys := src.cluster("GETKEYSINSLOT", slot, MIGRATE_BATCH):
            src.migrate(HOST, target.port, keys, 0, 5000)
            moved += len(keys)
            time.sleep(0.02)
        for client in (dst, src):
            client.cluster("SETSLOT", slot, "NODE", target_id)
        return moved


@pytest.mark.parametrize(
    "acks",
    [None, ReplicaAcks(replicas=1, timeout_ms=500)],
    ids=["no-replicas", "replica-acks"],
)
async def test_wallets_keep_spending_exactly_once_while_their_slot_moves(
    fresh_database: str, tmp_path: Path, acks: ReplicaAcks | None
) -> None:
    """With replica acks (a replica per master), redirects are not followed at all (a
    redirected call would run on a connection its WAIT does not cover): every call that
    meets the move is refused, and its retry lands on the new owner."""
    replicas = 0 if acks is None else 1
    cluster = EmbeddedRedisCluster(tmp_path / "cluster", masters=2, replicas=replicas)
    with cluster:
        async with wallet_api("redis", fresh_database, cluster.url, replica_acks=acks) as api:
            api.clock.now = time.time_ns() // 1_000_000
            wallets = await wallets_in_one_partition(api, cluster.slot_ranges()[0])
            slot = key_slot(keys_for(wallets[0], PARTITIONS).tag.encode())
            refusals: Counter[str] = Counter()

            async def spend(wallet_id: str) -> None:
                for i in range(CHARGES):
                    request = wallet_pb2.ChargeRequest(
                        request_id=f"charge-{i}", wallet=selector(wallet_id), amount=usd(PRICE)
                    )
                    while True:
                        try:
                            await api.stub.Charge(request)
                            break
                        except grpc.aio.AioRpcError as err:
                            assert err.code() is grpc.StatusCode.UNAVAILABLE, err
                            refusals[err.details() or ""] += 1
                            await asyncio.sleep(0.02)

            moving = asyncio.create_task(
                asyncio.to_thread(move_slot, slot, cluster.masters[0], cluster.masters[1])
            )
            await asyncio.gather(*(spend(w) for w in wallets))
            moved = await moving
            assert moved > 0  # the wallets' keys and the partition's stream went over

            with redis.Redis(host=HOST, port=cluster.masters[1].port) as target:
                for wallet_id in wallets:
                    assert target.exists(keys_for(wallet_id, PARTITIONS).wallet)
            for wallet_id in wallets:
                balance = await api.backend.balance(wallet_id, api.clock.now_ms())
                assert balance.active == 10 * DOLLAR - CHARGES * PRICE  # once each

            # The ledger behind it: a top-up and CHARGES charges per wallet, chains whole.
            worker = WriteBehind(api.redis, api.pool, range(PARTITIONS), consumer="wb-reshard")
            await worker.drain()
            for wallet_id in wallets:
                chain = await ledger_queries.verify_chain(api.pool, wallet_id)
                assert chain.valid, chain.problem
                assert chain.entries_checked == 1 + CHARGES
            report = await reconcile(api.pool, hot=api.backend, now_ms=api.clock.now_ms())
            assert (report.drift, report.lagging) == ([], [])
            print(f"moved {moved} keys; refusals while moving: {dict(refusals)}")

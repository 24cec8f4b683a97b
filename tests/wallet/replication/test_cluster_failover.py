"""OBOL_REDIS_REPLICA_ACKS on a real Redis Cluster with a replica per master: every write
is confirmed by the replica of the master it went to (a WAIT per master, on the pipelined
connection of its writes), and when a master is killed its replica takes over with every
acknowledged hold."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from obol_cli.embedded import HOST, EmbeddedRedis, EmbeddedRedisCluster
from obol_wallet.errors import InsufficientFunds
from obol_wallet.model import AuthorizeResult
from obol_wallet.partitions import wallet_of_hold

from ..redis.helpers import Harness
from .test_replica_acks import ACKS, harness

FAILOVER_TIMEOUT_SECONDS = 30.0


def wait_until_failed_over(victim: EmbeddedRedis, successor: EmbeddedRedis, seed: int) -> None:
    """Until `successor` is a master, the cluster is ok in its view, and the node on port
    `seed` (which clients will ask) no longer routes any slot to `victim`."""
    deadline = time.monotonic() + FAILOVER_TIMEOUT_SECONDS
    with (
        redis.Redis(host=HOST, port=successor.port) as promoted,
        redis.Redis(host=HOST, port=seed) as other,
    ):
        while True:
            role = promoted.info("replication").get("role")
            state = promoted.cluster("INFO").get("cluster_state")
            owners = {port for (_, port, *_) in _slot_owners(other)}
            if role == "master" and state == "ok" and victim.port not in owners:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no failover to {successor.port}: {role}, {state}, {owners}")
            time.sleep(0.1)


def _slot_owners(client: redis.Redis) -> list[tuple[str, int]]:
    """The master (host, port) of every slot range, from CLUSTER SLOTS as sent."""
    ranges = client.execute_command("CLUSTER SLOTS")
    if isinstance(ranges, dict):  # redis-py's parser: {(first, last): {"primary": ...}}
        return [tuple(entry["primary"]) for entry in ranges.values()]
    return [(entry[2][0], int(entry[2][1])) for entry in ranges]


async def wallets_on(h: Harness, slots: tuple[int, int], wanted: int, funds: int) -> list[str]:
    """`wanted` funded wallets whose keys hash into `slots` (first, last)."""
    found: list[str] = []
    while len(found) < wanted:
        wallet_id = await h.wallet(funds)
        if slots[0] <= key_slot(h.keys(wallet_id).wallet.encode()) <= slots[1]:
            found.append(wallet_id)
    return found


async def test_acknowledged_holds_survive_a_master_failover(tmp_path: Path) -> None:
    cluster = EmbeddedRedisCluster(tmp_path / "cluster", replicas=1, node_timeout_ms=1000)
    with cluster:
        victim, successor = cluster.masters[0], cluster.replicas_of(0)[0]
        async with harness(cluster.url, ACKS) as h:
            on_victim = await wallets_on(h, cluster.slot_ranges()[0], 6, funds=10)
            elsewhere = [await h.wallet(10) for _ in range(6)]
            wallets = on_victim + elsewhere
            # Four holds of 3 on each wallet of 10: three fit. Batched (a WAIT per master)
            # and one by one (a WAIT after each call).
            batched = await h.backend.authorize_many(
                [h.authorize_request(w, 3) for w in wallets for _ in range(2)]
            )

            async def one(wallet_id: str) -> AuthorizeResult | InsufficientFunds:
                try:
                    return await h.authorize(wallet_id, 3)
                except InsufficientFunds as refused:
                    return refused

            single = await asyncio.gather(*(one(w) for w in wallets for _ in range(2)))
        accepted = [r for r in [*batched, *single] if isinstance(r, AuthorizeResult)]
        assert len(accepted) == 3 * len(wallets)

        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        wait_until_failed_over(victim, successor, seed=cluster.masters[1].port)
        seed = f"redis+cluster://{HOST}:{cluster.masters[1].port}"
        async with harness(seed, None) as after:  # the new master has no replica yet
            for wallet_id in wallets:
                balance = await after.backend.balance(wallet_id, after.now)
                assert (balance.held, balance.available) == (9, 1)
            for result in accepted:
                wallet_id = wallet_of_hold(result.hold_id)
                assert wallet_id in wallets
                hold = await after.backend.hold(wallet_id, result.hold_id, after.now)
                assert hold.authorized == 3

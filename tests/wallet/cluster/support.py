"""Helpers of the Redis Cluster tests: where a wallet's keys live, outcomes of RPCs."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc.aio
from obol.wallet.v1 import wallet_pb2
from redis.crc import key_slot

from obol_cli.embedded import EmbeddedRedisCluster
from obol_wallet.partitions import keys_for

from ..grpc.harness import PARTITIONS, WalletApi, reason_of, selector, usd

DOLLAR = 1_000_000_000


def wallet_key(wallet_id: str, partitions: int = PARTITIONS) -> str:
    """The wallet's hash, `{pN}:w:<wallet>` (every key of the wallet shares its slot)."""
    return keys_for(wallet_id, partitions).wallet


def master_of(cluster: EmbeddedRedisCluster, wallet_id: str, partitions: int = PARTITIONS) -> int:
    """Index (in `cluster.masters`) of the master serving the wallet's slot."""
    slot = key_slot(wallet_key(wallet_id, partitions).encode())
    for index, (first, last) in enumerate(cluster.slot_ranges()):
        if first <= slot <= last:
            return index
    raise AssertionError(f"slot {slot} is served by no master")


async def wallets_on_every_master(
    api: WalletApi, cluster: EmbeddedRedisCluster, funds: int
) -> list[str]:
    """New wallets topped up with `funds`, one served by each master, in master order.

    Wallet ids are made by the service, so empty wallets are opened until every master
    has one (the 16 partitions are served 4, 5 and 7 by the three masters: a few tries);
    only the chosen ones are topped up, the others stay empty and make no ledger entries.
    """
    found: dict[int, str] = {}
    for _ in range(60):
        wallet_id = await api.wallet()
        found.setdefault(master_of(cluster, wallet_id), wallet_id)
        if len(found) == len(cluster.masters):
            chosen = [found[index] for index in range(len(cluster.masters))]
            for chosen_id in chosen:
                await api.stub.TopUp(
                    wallet_pb2.TopUpRequest(
                        request_id=f"t-{chosen_id}",
                        wallet=selector(chosen_id),
                        amount=usd(funds),
                        payment_reference="pay-test",
                    )
                )
            return chosen
    raise AssertionError(f"60 wallets landed on masters {sorted(found)} only")


@contextmanager
def private_cluster(**options: Any) -> Iterator[EmbeddedRedisCluster]:
    """A Redis Cluster of the test's own, three masters (`options` as EmbeddedRedisCluster
    takes them), in a temporary directory removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="obol-test-private-cluster-"))
    try:
        with EmbeddedRedisCluster(data_dir, masters=3, **options) as cluster:
            yield cluster
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def outcomes(calls: list[Awaitable[object]]) -> Counter[str]:
    """Run the calls concurrently; count `OK` and each refusal reason."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    counts: Counter[str] = Counter()
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            counts[reason_of(result)[0]] += 1
        elif isinstance(result, BaseException):
            raise result
        else:
            counts["OK"] += 1
    return counts

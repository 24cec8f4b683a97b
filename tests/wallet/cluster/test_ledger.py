"""Redis Cluster -> Postgres: the write-behind worker drains every partition's stream (one
XREADGROUP per stream, each in its own slot), and the ledger it writes matches the hot
state on the cluster, as `obol reconcile` (a real process) confirms; `obol rebuild`
restores a lost hot state onto the cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from google.protobuf.duration_pb2 import Duration
from infra.cli import run_obol
from obol.wallet.v1 import wallet_pb2

from obol_cli.commands.reconcile import stream_backlog
from obol_cli.embedded import EmbeddedRedisCluster, free_port
from obol_cli.health import grpc_serving
from obol_wallet import ledger_queries
from obol_wallet.errors import WalletNotHydrated
from obol_wallet.reconcile import reconcile
from obol_wallet.redis_backend import RedisBackend
from obol_wallet.writebehind import WriteBehind

from ..grpc.harness import PARTITIONS, USD, WalletApi, selector, usd
from ..postgres import ops
from ..postgres.support import START_MS, new_wallet
from .support import DOLLAR, master_of, wallets_on_every_master

# Per wallet, _activity makes: top-up, authorize, capture, authorize, void, 3 charges,
# authorize (left open).
ENTRIES_PER_WALLET = 9
SPENT = DOLLAR + 3 * (DOLLAR // 10)  # captured + charged
LEFT_HELD = DOLLAR // 2


async def _activity(api: WalletApi, wallet_id: str) -> None:
    def authorize(request_id: str, amount: int) -> wallet_pb2.AuthorizeRequest:
        return wallet_pb2.AuthorizeRequest(
            request_id=request_id,
            wallet=selector(wallet_id),
            amount=usd(amount),
            ttl=Duration(seconds=600),
        )

    hold = await api.stub.Authorize(authorize("a-1", 2 * DOLLAR))
    await api.stub.Capture(
        wallet_pb2.CaptureRequest(
            request_id="c-1", hold_id=hold.hold_id, amount=usd(DOLLAR), provider_cost=usd(7)
        )
    )
    voided = await api.stub.Authorize(authorize("a-2", DOLLAR))
    await api.stub.Void(wallet_pb2.VoidRequest(request_id="v-1", hold_id=voided.hold_id))
    await asyncio.gather(
        *(
            api.stub.Charge(
                wallet_pb2.ChargeRequest(
                    request_id=f"ch-{i}", wallet=selector(wallet_id), amount=usd(DOLLAR // 10)
                )
            )
            for i in range(3)
        )
    )
    await api.stub.Authorize(authorize("a-3", LEFT_HELD))


def _env(database_url: str, cluster: EmbeddedRedisCluster) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": cluster.url,
        "OBOL_WALLET_PARTITIONS": str(PARTITIONS),
        "OBOL_WALLET_BACKEND": "redis",
    }


async def _assert_postgres_matches_redis(api: WalletApi, wallets: list[str]) -> None:
    backlog = await stream_backlog(api.redis, range(PARTITIONS))
    assert backlog == dict.fromkeys(range(PARTITIONS), 0)  # every stream written and deleted
    for wallet_id in wallets:
        chain = await ledger_queries.verify_chain(api.pool, wallet_id)
        assert chain.valid, chain.problem
        assert chain.entries_checked == ENTRIES_PER_WALLET
        hot = await api.backend.balance(wallet_id, api.clock.now_ms())
        assert (hot.active + hot.overdraft_used, hot.held) == (5 * DOLLAR - SPENT, LEFT_HELD)
        ledger = await ledger_queries.wallet_balances(api.pool, wallet_id)
        assert ledger.total == hot.active + hot.overdraft_used
        row = await api.pool.fetchrow(
            "SELECT active, held, version FROM wallets WHERE wallet_id = $1", wallet_id
        )
        assert row is not None
        assert (row["active"], row["held"], row["version"]) == (hot.active, hot.held, hot.version)
    # Every wallet: the ones used and the empty ones opened to find them.
    report = await reconcile(api.pool, hot=api.backend, now_ms=api.clock.now_ms())
    assert (report.wallets_checked, report.drift, report.lagging) == (
        await _wallet_count(api),
        [],
        [],
    )
    assert await ledger_queries.unbalanced_assets(api.pool) == {}


async def _wallet_count(api: WalletApi) -> int:
    count: int = await api.pool.fetchval("SELECT count(*) FROM wallets")
    return count


async def test_the_ledger_written_behind_from_every_master_matches_redis(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster, fresh_database: str
) -> None:
    api = cluster_api
    wallets = await wallets_on_every_master(api, redis_cluster, 5 * DOLLAR)
    for wallet_id in wallets:
        await _activity(api, wallet_id)
    assert sum((await stream_backlog(api.redis, range(PARTITIONS))).values()) == (
        ENTRIES_PER_WALLET * len(wallets)  # one stream message per mutation, not yet written
    )

    worker = WriteBehind(api.redis, api.pool, range(PARTITIONS), consumer="wb-cluster")
    assert await worker.drain() == ENTRIES_PER_WALLET * len(wallets)
    await _assert_postgres_matches_redis(api, wallets)
    lag = await worker.lag()
    assert {p: (lag[p].backlog, lag[p].oldest_age_ms) for p in lag} == dict.fromkeys(
        range(PARTITIONS), (0, 0)
    )

    env = _env(fresh_database, redis_cluster)
    code, output = await run_obol(env, "reconcile")
    assert code == 0, output
    assert f"reconciled {await _wallet_count(api)} wallets (redis): no drift" in output

    # The comparison is real: Postgres made to disagree is reported.
    await api.pool.execute("UPDATE wallets SET held = held + 1 WHERE wallet_id = $1", wallets[-1])
    code, output = await run_obol(env, "reconcile")
    assert code == 1
    assert f"DRIFT wallet {wallets[-1]}: held" in output


async def test_the_write_behind_worker_process_follows_the_cluster(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster, fresh_database: str
) -> None:
    """`python -m obol_wallet.writebehind` on a `redis+cluster://` URL: ready (Postgres and
    the cluster reachable), writes what the service streams while it runs, stops cleanly."""
    api = cluster_api
    wallets = await wallets_on_every_master(api, redis_cluster, 5 * DOLLAR)
    port = free_port()
    env = {
        **_env(fresh_database, redis_cluster),
        "OBOL_WRITEBEHIND_CONSUMER": "writebehind-0",
        "OBOL_WRITEBEHIND_HEALTH_PORT": str(port),
        "OBOL_WRITEBEHIND_BLOCK_MS": "50",
        "OBOL_HOST": "127.0.0.1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "obol_wallet.writebehind", env=env
    )
    try:
        for _ in range(300):
            if await asyncio.to_thread(grpc_serving, f"127.0.0.1:{port}"):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the write-behind worker never became ready")
        for wallet_id in wallets:
            await _activity(api, wallet_id)
        expected = ENTRIES_PER_WALLET * len(wallets)
        for _ in range(300):
            written = await api.pool.fetchval("SELECT count(*) FROM ledger_entries")
            if written >= expected:
                break
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    await _assert_postgres_matches_redis(api, wallets)


async def test_rebuild_restores_a_lost_hot_state_onto_the_cluster(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster, fresh_database: str
) -> None:
    api = cluster_api
    assert isinstance(api.backend, RedisBackend)
    wallets = await wallets_on_every_master(api, redis_cluster, 5 * DOLLAR)
    for wallet_id in wallets:
        await _activity(api, wallet_id)
    before = [await api.backend.balance(w, api.clock.now_ms()) for w in wallets]
    await api.drain_ledger()

    for wallet_id in wallets:
        await api.backend.drop_hot_state(wallet_id)
        with pytest.raises(WalletNotHydrated):
            await api.backend.balance(wallet_id, api.clock.now_ms())
    code, output = await run_obol(_env(fresh_database, redis_cluster), "rebuild")
    assert code == 0, output
    assert all(f"rebuilt {wallet_id}" in output for wallet_id in wallets)
    assert f"{len(wallets)} of {await _wallet_count(api)} wallets rebuilt" in output
    for wallet_id, was in zip(wallets, before, strict=True):
        now = await api.backend.balance(wallet_id, api.clock.now_ms())
        assert (now.active, now.overdraft_used, now.held) == (
            was.active,
            was.overdraft_used,
            was.held,
        )
    # The hot path goes on where it stopped, and its chain continues in Postgres.
    for wallet_id in wallets:
        await api.stub.Charge(
            wallet_pb2.ChargeRequest(
                request_id="after-rebuild", wallet=selector(wallet_id), amount=usd(DOLLAR // 10)
            )
        )
    await api.drain_ledger()
    for wallet_id in wallets:
        chain = await ledger_queries.verify_chain(api.pool, wallet_id)
        assert (chain.valid, chain.entries_checked) == (True, ENTRIES_PER_WALLET + 1)
    report = await reconcile(api.pool, hot=api.backend, now_ms=api.clock.now_ms())
    assert (report.drift, report.lagging) == ([], [])


async def test_a_worker_over_1024_partitions_reads_every_stream_on_the_cluster(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster
) -> None:
    """At the partition count DESIGN.md suggests, one read round is 1024 XREADGROUPs (one
    per slot): sent as one pipeline, they neither exhaust a node's connections nor cost
    1024 round trips; every wallet's entries arrive, from every master."""
    api = cluster_api
    partitions = 1024
    backend = RedisBackend(api.redis, partitions=partitions)
    wallets: list[str] = []
    masters: set[int] = set()
    while len(wallets) < 12 or len(masters) < len(redis_cluster.nodes):  # some on each
        assert len(wallets) < 100
        wallet_id = await new_wallet(api.pool, partitions=partitions)
        wallets.append(wallet_id)
        masters.add(master_of(redis_cluster, wallet_id, partitions))
        await backend.open_wallet(wallet_id, USD, 0, START_MS)
        await backend.grant(ops.grant(wallet_id, 5 * DOLLAR))
        await backend.charge(ops.charge(wallet_id, DOLLAR))

    worker = WriteBehind(api.redis, api.pool, range(partitions), consumer="wb-1024")
    assert await worker.drain() == 2 * len(wallets)
    assert sum(lag.backlog for lag in (await worker.lag()).values()) == 0
    for wallet_id in wallets:
        chain = await ledger_queries.verify_chain(api.pool, wallet_id)
        assert (chain.valid, chain.entries_checked) == (True, 2)
        ledger = await ledger_queries.wallet_balances(api.pool, wallet_id)
        assert ledger.total == 4 * DOLLAR
    report = await reconcile(api.pool, hot=backend, now_ms=START_MS, wallet_ids=wallets)
    assert (report.wallets_checked, report.drift, report.lagging) == (len(wallets), [], [])


async def test_the_write_behind_recreates_its_groups_after_every_master_lost_its_data(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster
) -> None:
    """FLUSHALL on every master under a worker: its round (one pipeline of XREADGROUPs)
    answers NOGROUP; it creates the groups again and writes what comes next, once each."""
    api = cluster_api
    backend = RedisBackend(api.redis, partitions=PARTITIONS)
    worker = WriteBehind(api.redis, api.pool, range(PARTITIONS), consumer="wb-cluster")

    async def granted_on_every_master() -> list[str]:
        wallets: list[str] = []
        masters: set[int] = set()
        while len(masters) < len(redis_cluster.nodes):
            assert len(wallets) < 60
            wallet_id = await new_wallet(api.pool, partitions=PARTITIONS)
            wallets.append(wallet_id)
            masters.add(master_of(redis_cluster, wallet_id))
            await backend.open_wallet(wallet_id, USD, 0, START_MS)
            await backend.grant(ops.grant(wallet_id, 5 * DOLLAR))
        return wallets

    before = await granted_on_every_master()
    assert await worker.drain() == len(before)
    await api.redis.flushall()  # every master: hot state, streams, groups
    after = await granted_on_every_master()
    assert await worker.drain() == len(after)
    assert sum((await stream_backlog(api.redis, range(PARTITIONS))).values()) == 0
    for wallet_id in before + after:
        chain = await ledger_queries.verify_chain(api.pool, wallet_id)
        assert (chain.valid, chain.entries_checked) == (True, 1)

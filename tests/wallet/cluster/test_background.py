"""The wallet service's background work on Redis Cluster: the expiry sweeper and the auto
top-up worker, over wallets on every master.

Both FAIL on Redis Cluster until redis_backend/backend.py `_pipeline` stops calling
`pipe.evalsha(...)`, which redis-py refuses on cluster pipelines ("Calling pipelined
function evalsha is blocked when running redis in cluster mode"): `sweep()` runs the due
wallets' read script through `_pipeline`, and so does the top-up worker's look at due
wallets (`RedisTopUps.start_due`, which every new rule makes due). See docs/wallet.md,
"Redis Cluster".
"""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from obol.wallet.v1 import wallet_pb2

from obol_cli.embedded import EmbeddedRedisCluster

from ..grpc.harness import WalletApi, selector, usd
from .support import DOLLAR, wallets_on_every_master


async def test_the_sweeper_expires_holds_on_every_master(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster
) -> None:
    api = cluster_api
    wallets = await wallets_on_every_master(api, redis_cluster, 5 * DOLLAR)
    for wallet_id in wallets:
        await api.stub.Authorize(
            wallet_pb2.AuthorizeRequest(
                request_id="expiring",
                wallet=selector(wallet_id),
                amount=usd(2 * DOLLAR),
                ttl=Duration(seconds=10),
            )
        )
    api.clock.advance(11_000)
    # Nobody touches the wallets: only the sweep settles their time.
    assert await api.backend.sweep(api.clock.now_ms(), 100) == len(wallets)
    await api.drain_ledger()
    rows = await api.pool.fetch(
        "SELECT wallet_id, state FROM holds WHERE wallet_id = ANY($1::text[])", wallets
    )
    assert sorted((r["wallet_id"], r["state"]) for r in rows) == sorted(
        (w, "expired") for w in wallets
    )
    released = await api.pool.fetchval(
        """SELECT count(*) FROM ledger_entries
           WHERE wallet_id = ANY($1::text[]) AND kind = 'release'""",
        wallets,
    )
    assert released == len(wallets)
    assert await api.backend.sweep(api.clock.now_ms(), 100) == 0  # nothing due any more


async def test_auto_top_ups_run_for_wallets_on_every_master(
    cluster_api: WalletApi, redis_cluster: EmbeddedRedisCluster
) -> None:
    api = cluster_api
    wallets = await wallets_on_every_master(api, redis_cluster, 60 * DOLLAR)
    for wallet_id in wallets:
        await api.stub.SetAutoTopUpRule(
            wallet_pb2.SetAutoTopUpRuleRequest(
                wallet_id=wallet_id,
                threshold=usd(50 * DOLLAR),
                amount=usd(20 * DOLLAR),
                payment_method_id="pm_ok_visa",
                enabled=True,
                request_id=f"rule-{wallet_id}",  # admin request ids are global
            )
        )
    await api.run_top_ups()  # a new rule is due at once: the worker looks, nothing to buy
    for wallet_id in wallets:
        spent = await api.stub.Charge(
            wallet_pb2.ChargeRequest(
                request_id="cross", wallet=selector(wallet_id), amount=usd(15 * DOLLAR)
            )
        )
        assert spent.auto_top_up_triggered  # 45 left: below 50, in the spend's own step
    await api.run_top_ups()
    assert len(api.payments.succeeded) == len(wallets)
    for wallet_id in wallets:
        assert await api.available(wallet_id) == 65 * DOLLAR
        rule = await api.stub.GetAutoTopUpRule(
            wallet_pb2.GetAutoTopUpRuleRequest(wallet_id=wallet_id)
        )
        assert rule.rule.status.last_outcome == wallet_pb2.AUTO_TOP_UP_OUTCOME_SUCCEEDED

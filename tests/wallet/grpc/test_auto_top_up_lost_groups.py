"""The auto top-up worker when Redis lost its data under it (docs/wallet.md, "Auto top-up"):
its `topups` consumer groups are gone and its reads answer NOGROUP. The running worker
creates them again and runs the next attempts, each charged once and credited once, without
a restart; any other Redis error still fails the round as before."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from obol_wallet import auto_top_up
from obol_wallet.auto_top_up import AutoTopUpWorker
from obol_wallet.partitions import WalletKeys

from .harness import PARTITIONS, WalletApi
from .test_auto_top_up import DOLLAR, _attempts, _auto_top_ups, _charge, _rule


async def _topped_up_by_the_worker(api: WalletApi) -> str:
    """A $60 wallet with a rule (below $50: buy $20) and a $20 charge that crosses the
    threshold; returns the attempt once the running worker has paid it."""
    wallet_id = await api.wallet(60 * DOLLAR)
    await api.stub.SetAutoTopUpRule(
        _rule(wallet_id, f"rule-{wallet_id}", threshold=50 * DOLLAR, amount=20 * DOLLAR)
    )
    assert await _charge(api, wallet_id, 20 * DOLLAR, f"cross-{wallet_id}")
    for _ in range(250):
        if await _attempts(api, wallet_id) == [("succeeded", "")]:
            break
        await asyncio.sleep(0.02)
    assert await _attempts(api, wallet_id) == [("succeeded", "")]
    assert await api.available(wallet_id) == 60 * DOLLAR
    attempt_id: str = await api.pool.fetchval(
        "SELECT attempt_id FROM auto_topup_attempts WHERE wallet_id = $1", wallet_id
    )
    return attempt_id


@pytest.mark.parametrize("loss", ["flushdb", "streams"])
async def test_a_running_worker_recreates_its_groups_when_redis_lost_its_data(
    redis_api: WalletApi, loss: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = redis_api
    monkeypatch.setattr(auto_top_up, "INTERVAL_SECONDS", 0.05)  # quick rounds
    worker = AutoTopUpWorker(api.pool, api.backend, api.payments, api.clock, consumer="w1")
    with capture_logs() as logs:
        task = asyncio.create_task(worker.run())
        try:
            before = await _topped_up_by_the_worker(api)
            if loss == "flushdb":  # the test's own db: hot state, streams, groups
                await api.redis.flushdb()
            else:  # the top-up streams (and their groups) only
                await api.redis.delete(*(WalletKeys(p, "").topups for p in range(PARTITIONS)))
            after = await _topped_up_by_the_worker(api)  # a new wallet, a new attempt
            await asyncio.sleep(0.3)  # a few more rounds: nothing runs again
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)  # the worker honours its cancellation

    assert [c.idempotency_key for c in api.payments.succeeded] == [before, after]
    assert api.payments.calls == 2
    wallet_id = after.partition(":")[0]
    assert await _auto_top_ups(api, wallet_id) == [20 * DOLLAR]  # one ledger entry
    assert await api.available(wallet_id) == 60 * DOLLAR
    lost = [line for line in logs if "consumer group lost" in line["event"]]
    assert [(line["log_level"], line["partitions"]) for line in lost] == [
        ("warning", list(range(PARTITIONS)))
    ]
    assert not [line for line in logs if line["event"] == "auto top-up round failed"]


async def test_other_redis_errors_still_fail_the_round(redis_api: WalletApi) -> None:
    api = redis_api
    worker = AutoTopUpWorker(api.pool, api.backend, api.payments, api.clock, consumer="w1")
    await worker.run_once()  # creates the groups
    key = WalletKeys(0, "").topups
    await api.redis.delete(key)
    await api.redis.set(key, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await worker.run_once()  # run() logs it and tries again after its interval
    assert await api.redis.type(key) == b"string"  # no group was made over it

    await api.redis.delete(key)  # repaired: the next read answers NOGROUP
    assert await worker.run_once() == 0  # the group is created again, nothing failed
    groups = await api.redis.xinfo_groups(key)
    assert [g["name"] for g in groups] == [b"topups"]
    assert await worker.run_once() == 0

"""WatchTransactions: the ledger event stream, filtered, resumable by cursor."""

from __future__ import annotations

import asyncio

from google.protobuf.timestamp_pb2 import Timestamp
from obol.wallet.v1 import wallet_pb2

from .harness import WalletApi, selector, usd

DOLLAR = 1_000_000_000


async def test_watch_streams_posted_entries_with_filters_and_cursors(api: WalletApi) -> None:
    start = Timestamp()
    start.GetCurrentTime()
    wallet_id = await api.wallet(5 * DOLLAR)
    charges = []
    for i in range(3):
        reply = await api.stub.Charge(
            wallet_pb2.ChargeRequest(
                request_id=f"wt-{i}", wallet=selector(wallet_id), amount=usd(DOLLAR)
            )
        )
        charges.append(reply.transaction_id)
    await api.drain_ledger()

    stream = api.stub.WatchTransactions(
        wallet_pb2.WatchTransactionsRequest(
            start_time=start, kinds=[wallet_pb2.TRANSACTION_KIND_CHARGE]
        )
    )
    seen: list[wallet_pb2.WatchTransactionsResponse] = []
    try:
        while len({r.transaction.transaction_id for r in seen}) < 3:
            seen.append(await asyncio.wait_for(stream.read(), timeout=5))
    finally:
        stream.cancel()
    assert [r.transaction.transaction_id for r in seen] == charges
    assert all(r.transaction.kind == wallet_pb2.TRANSACTION_KIND_CHARGE for r in seen)
    assert all(len(r.transaction.lines) >= 2 for r in seen)  # FULL view by default

    later = await api.stub.Charge(
        wallet_pb2.ChargeRequest(request_id="wt-late", wallet=selector(wallet_id), amount=usd(1))
    )
    await api.drain_ledger()
    resumed = api.stub.WatchTransactions(
        wallet_pb2.WatchTransactionsRequest(
            after_cursor=seen[-1].cursor, kinds=[wallet_pb2.TRANSACTION_KIND_CHARGE]
        )
    )
    ids: list[str] = []
    try:
        while later.transaction_id not in ids:
            ids.append(
                (await asyncio.wait_for(resumed.read(), timeout=5)).transaction.transaction_id
            )
    finally:
        resumed.cancel()
    assert set(ids) <= {*charges, later.transaction_id}  # at least once: re-sends dedupe by id

"""WatchBalance streams a wallet's state at once and after every change."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from obol.wallet.v1 import wallet_pb2

from .harness import WalletApi, selector, usd

DOLLAR = 1_000_000_000


async def test_watch_sends_the_initial_state_then_each_change(api: WalletApi) -> None:
    wallet_id = await api.wallet(2 * DOLLAR)
    stream = api.stub.WatchBalance(wallet_pb2.WatchBalanceRequest(wallet_ids=[wallet_id]))
    try:
        first = await asyncio.wait_for(stream.read(), timeout=5)
        assert first.wallet.available.amount == 2 * DOLLAR
        await api.stub.Charge(
            wallet_pb2.ChargeRequest(
                request_id="watch-charge", wallet=selector(wallet_id), amount=usd(DOLLAR)
            )
        )
        second = await asyncio.wait_for(stream.read(), timeout=5)
        assert second.wallet.available.amount == DOLLAR
        assert second.wallet.balance_version > first.wallet.balance_version
    finally:
        stream.cancel()


async def test_an_unchanged_wallet_costs_one_balance_read_per_poll(api: WalletApi) -> None:
    """The grants are read again only when the balance version moved."""
    wallet_id = await api.wallet(DOLLAR)
    calls: Counter[str] = Counter()
    for name in ("balance", "grants"):
        read = getattr(api.backend, name)

        async def counted(*args: Any, _read: Any = read, _name: str = name) -> Any:
            calls[_name] += 1
            return await _read(*args)

        setattr(api.backend, name, counted)  # the real read, counted
    stream = api.stub.WatchBalance(wallet_pb2.WatchBalanceRequest(wallet_ids=[wallet_id]))
    try:
        first = await asyncio.wait_for(stream.read(), timeout=5)
        assert first.wallet.available.amount == DOLLAR
        await asyncio.sleep(1.0)  # about five polls, nothing changing
    finally:
        stream.cancel()
    assert calls["balance"] >= 3
    assert calls["grants"] == 1

"""Balance watch: a stream of wallet states, one per change.

It polls each watched wallet's balance (one read per wallet per interval, on either
backend; the read settles time, so an expiry moves the version too) and, only when its
version moved, reads the grants and yields the wallet; the first state of every wallet is
yielded at once. Watching by customer picks up wallets created later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from . import wallets
from .core import WalletCore, WalletView
from .wallets import WalletRecord

POLL_INTERVAL_SECONDS = 0.2
# With a customer, how many polls between re-reading the customer's list of wallets.
_REFRESH_EVERY = 10


async def watch_balances(
    core: WalletCore,
    *,
    wallet_ids: Sequence[str] = (),
    customer_id: str = "",
    interval_seconds: float = POLL_INTERVAL_SECONDS,
) -> AsyncIterator[WalletView]:
    records: list[WalletRecord] = [await core.directory.get(w) for w in wallet_ids]
    versions: dict[str, int] = {}
    polls = 0
    while True:
        if customer_id and polls % _REFRESH_EVERY == 0:
            records = await wallets.list_wallets(
                core.pool, limit=1000, after=None, customer_id=customer_id
            )
        polls += 1
        for record in records:
            now_ms = core.clock.now_ms()
            balance = await core.backend.balance(record.wallet_id, now_ms)
            if versions.get(record.wallet_id) != balance.version:
                versions[record.wallet_id] = balance.version
                grants = await core.backend.grants(record.wallet_id, now_ms)
                yield WalletView(record, balance, grants)
        await asyncio.sleep(interval_seconds)

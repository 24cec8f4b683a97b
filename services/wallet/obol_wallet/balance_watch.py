"""Balance watch: a stream of wallet states, one per change.

It polls each watched wallet's balance version (one cheap read per wallet per interval,
on either backend) and yields the wallet whenever the version moved; the first state of
every wallet is yielded at once. Watching by customer picks up wallets created later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from . import wallets
from .core import WalletCore, WalletView
from .wallets import WalletRecord, WalletSelector

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
            view = await core.view(WalletSelector(wallet_id=record.wallet_id))
            if versions.get(record.wallet_id) != view.balance.version:
                versions[record.wallet_id] = view.balance.version
                yield view
        await asyncio.sleep(interval_seconds)

"""The expiry sweeper: settles time for wallets nobody touches.

Every mutation and read settles its own wallet's time first (lazy expiry), so the sweeper
is not needed for correctness; it makes expired grants and holds leave through the ledger
promptly, so statements and the write-behind see them without waiting for the next call.
"""

from __future__ import annotations

import asyncio

import structlog

from obol_core.cancellation import raise_if_cancelling

from .backend import WalletBackend
from .clock import Clock

_log = structlog.get_logger("obol.wallet.sweeper")

SWEEP_INTERVAL_SECONDS = 1.0
SWEEP_BATCH = 500


async def run_sweeper(backend: WalletBackend, clock: Clock) -> None:
    while True:
        raise_if_cancelling()  # also when a handler inside the sweep swallowed it
        try:
            swept = await backend.sweep(clock.now_ms(), SWEEP_BATCH)
        except Exception:  # a failed sweep is retried on the next tick; never fatal
            raise_if_cancelling()
            _log.exception("sweep failed")
            swept = 0
        if swept < SWEEP_BATCH:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)

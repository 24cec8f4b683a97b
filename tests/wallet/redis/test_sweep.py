"""The sweep settles wallets that nobody touches, from the partitions' `due` lists."""

from __future__ import annotations

from obol_wallet.model import EntryKind

from .helpers import Harness


async def test_sweep_settles_due_wallets_only(isolated: Harness) -> None:
    h = isolated
    await h.backend.load_scripts()
    expiring = [await h.wallet(10, expires_ms=h.now + 1_000) for _ in range(5)]
    holding = await h.wallet(50)
    await h.authorize(holding, 20, ttl_ms=2_000)
    quiet = await h.wallet(10)
    assert await h.backend.sweep(h.now, 100) == 0  # nothing due yet

    h.advance(1_000)
    assert await h.backend.sweep(h.now, 3) == 3  # the limit holds
    assert await h.backend.sweep(h.now, 100) == 2
    assert await h.backend.sweep(h.now, 100) == 0
    for w in expiring:
        kinds = [e.kind for m in await h.messages(w) for e in m.entries]
        assert kinds == [EntryKind.TOP_UP, EntryKind.EXPIRY]
        await h.check(w)

    h.advance(1_000)
    assert await h.backend.sweep(h.now, 100) == 1
    last = (await h.messages(holding))[-1]
    assert last.entries[0].kind is EntryKind.RELEASE and last.wallet.held == 0
    assert len(await h.messages(quiet)) == 1
    for key in await h.client.keys("*:due"):
        assert await h.client.zcard(key) == 0


async def test_sweep_drops_wallets_that_lost_their_hot_state(isolated: Harness) -> None:
    h = isolated
    w = await h.wallet(10, expires_ms=h.now + 1)
    await h.client.delete(h.keys(w).wallet)  # the hash is gone, its due entry is not
    h.advance(1)
    assert await h.backend.sweep(h.now, 10) == 0
    assert await h.client.zcard(h.keys(w).due) == 0

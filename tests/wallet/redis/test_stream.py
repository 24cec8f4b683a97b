"""The ledger stream message: its fields, its decoding, and the balance announcements."""

from __future__ import annotations

import asyncio
import json

import pytest

from obol_wallet.model import EntryKind, GrantKind, HoldState
from obol_wallet.redis_backend import STREAM_GROUP, balance_channel, ledger_stream
from obol_wallet.redis_backend.codec import MessageError, StreamOp, decode_message

from .helpers import USD, Harness

FIELDS = {
    b"op",
    b"w",
    b"rid",
    b"now",
    b"entries",
    b"grants",
    b"holds",
    b"wallet",
    b"hash",
    b"result",
}


async def test_one_message_per_mutation_with_the_documented_fields(h: Harness) -> None:
    w = await h.wallet()
    grant = await h.grant(w, 100, kind=GrantKind.INCLUDED, expires_ms=h.now + 60_000)
    hold_request = h.authorize_request(w, 40)
    hold = await h.backend.authorize(hold_request)
    await h.capture(hold.hold_id, 25)
    raw = [f for _, f in await h.client.xrange(h.keys(w).ledger, "-", "+") if f[b"w"] == w.encode()]
    assert len(raw) == 3
    assert all(set(fields) == FIELDS for fields in raw)

    authorize = decode_message(raw[1])
    assert authorize.op is StreamOp.AUTHORIZE
    assert (authorize.request_id, authorize.now_ms) == (hold_request.idem.request_id, h.now)
    assert [e.entry_id for e in authorize.entries] == [hold_request.entry_id]
    assert authorize.entries[0].request_id == hold_request.idem.request_id
    (row,) = authorize.holds
    assert (row.hold.state, row.hold.authorized, row.request_id) == (
        HoldState.OPEN,
        40,
        hold_request.idem.request_id,
    )
    assert row.version == authorize.wallet.version == hold.balance.version
    assert authorize.request is not None
    assert authorize.request.request_hash == hold_request.idem.request_hash
    assert authorize.request.result == authorize.result
    assert json.loads(authorize.result)["hold"] == hold.hold_id

    capture = decode_message(raw[2])
    (grant_row,) = capture.grants
    assert grant_row.grant.grant_id == grant.grant_id
    assert (grant_row.grant.remaining, grant_row.expired, grant_row.pending) == (75, False, False)
    assert capture.holds[0].hold.state is HoldState.CAPTURED
    assert capture.holds[0].closed_ms == h.now
    assert capture.wallet.asset_code == USD
    assert (capture.wallet.active, capture.wallet.held, capture.wallet.seq) == (75, 0, 3)
    assert capture.entries[0].kind is EntryKind.CAPTURE
    await h.check(w)


async def test_reads_settle_time_and_stream_it(h: Harness) -> None:
    w = await h.wallet(10, expires_ms=h.now + 5)
    h.advance(5)
    await h.backend.balance(w, h.now)
    last = (await h.messages(w))[-1]
    assert (last.op, last.request_id, last.request) == (StreamOp.EXPIRE, "", None)
    assert last.entries[0].kind is EntryKind.EXPIRY
    await h.backend.balance(w, h.now)
    assert len(await h.messages(w)) == 2, "nothing changed, nothing appended"


def test_malformed_messages_are_refused() -> None:
    with pytest.raises(MessageError):
        decode_message({b"op": b"authorize"})
    good = {
        b"op": b"expire",
        b"w": b"wal_x",
        b"rid": b"",
        b"now": b"5",
        b"entries": b"{}",
        b"grants": b"[]",
        b"holds": b"{}",
        b"wallet": json.dumps(
            {"asset": "USD", "active": "1", "od": "0", "held": "0", "frozen": "0"}
            | {"limit": "0", "seq": "0", "version": "1"}
        ).encode(),
        b"hash": b"",
        b"result": b"",
    }
    assert decode_message(good).entries == []  # cjson's empty list may read as {}
    for field, value in ((b"now", b"1e3"), (b"entries", b"[{]"), (b"op", b"nope")):
        with pytest.raises(MessageError):
            decode_message({**good, field: value})
    with pytest.raises(MessageError):  # numbers must be decimal strings, never JSON numbers
        decode_message(
            {**good, b"wallet": good[b"wallet"].replace(b'"active": "1"', b'"active": 1')}
        )


def test_stable_names() -> None:
    assert STREAM_GROUP == "writebehind"
    assert ledger_stream(17) == "{p17}:ledger"
    assert balance_channel("wal_1") == "obol:balance:wal_1"


async def test_every_change_publishes_the_balance(h: Harness) -> None:
    w = await h.wallet(100)
    pubsub = h.client.pubsub()
    await pubsub.subscribe(balance_channel(w))
    await pubsub.get_message(timeout=1)  # the subscription confirmation
    await h.charge(w, 30)
    message = None
    for _ in range(50):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            break
        await asyncio.sleep(0)
    await pubsub.aclose()
    assert message is not None
    assert json.loads(message["data"]) == {"version": "2", "available": "70"}

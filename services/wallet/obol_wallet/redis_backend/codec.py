"""What the Lua scripts write, decoded into typed Python: stream messages and results.

Stable API for the write-behind worker::

    from obol_wallet.redis_backend.codec import STREAM_GROUP, decode_message, ledger_stream

    fields = ...  # one XREADGROUP message of ledger_stream(p): dict[bytes, bytes]
    message = decode_message(fields)  # StreamMessage, or MessageError if malformed

One message per mutation, appended in the same Lua call as the change. Flat fields (all
numbers are decimal strings, JSON is made by cjson over strings only):

- `op` (StreamOp), `w` wallet id, `rid` request id ('' for time settled on its own),
  `now` ms of the operation;
- `entries`: JSON list of `{"id","seq","kind","rid","at","memo","lines"}`, `memo` a JSON
  object as a string, `lines` a list of `[account, asset, amount]`; lines sum to zero per
  asset; seqs follow each other within and across a wallet's messages;
- `grants` / `holds`: JSON lists of the full new state of every grant/hold the call
  touched; `version` is the wallet version that made the change, so a row may be applied
  only when newer;
- `wallet`: the wallet's counters after the call;
- `hash` and `result`: the idempotency record to persist (with `rid`): the request's hash
  and its encoded result, both '' when the call only settled time.

The consumer must XACK and XDEL a message only after its Postgres commit: XLEN of a
partition's stream is its backlog, which the backend bounds (Backpressure).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..model import (
    AuthorizeResult,
    Balance,
    CaptureResult,
    DebitResult,
    Draw,
    EntryKind,
    ExtendHoldResult,
    Grant,
    GrantKind,
    GrantResult,
    Hold,
    HoldState,
    LedgerEntry,
    LedgerLine,
    MutationResult,
    RequestRecord,
    VoidResult,
)

__all__ = [
    "BALANCE_CHANNEL_PREFIX",
    "STREAM_GROUP",
    "GrantRow",
    "HoldRow",
    "MessageError",
    "StreamMessage",
    "StreamOp",
    "WalletRow",
    "balance_channel",
    "decode_authorize",
    "decode_balance",
    "decode_capture",
    "decode_debit",
    "decode_extend",
    "decode_grant",
    "decode_grant_record",
    "decode_message",
    "decode_mutation",
    "decode_void",
    "ledger_stream",
]

STREAM_GROUP = "writebehind"
"""The consumer group of the write-behind worker on every partition's ledger stream."""

BALANCE_CHANNEL_PREFIX = "obol:balance:"


def ledger_stream(partition: int) -> str:
    """The ledger stream key of a partition (same as `WalletKeys.ledger`)."""
    return f"{{p{partition}}}:ledger"


def balance_channel(wallet_id: str) -> str:
    """The pub/sub channel where every change of the wallet publishes
    `{"version": "<n>", "available": "<amount>"}`."""
    return BALANCE_CHANNEL_PREFIX + wallet_id


class MessageError(ValueError):
    """A stream message or script reply that does not follow the format."""


class StreamOp(enum.Enum):
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    CHARGE = "charge"
    GRANT = "grant"
    REFUND = "refund"
    EXPIRE = "expire"  # time settled on its own (sweep, read, or before a refusal)
    SETTINGS = "settings"
    DEBIT = "debit"
    EXTEND = "extend"
    TOP_UP = "top_up"  # the top-up worker started a due auto top-up attempt


@dataclass(frozen=True)
class GrantRow:
    """A grant's full state after the change (remaining 0 and expired once it expired)."""

    grant: Grant
    expired: bool
    pending: bool  # not effective yet at the message's time: not counted in `active`
    version: int


@dataclass(frozen=True)
class HoldRow:
    hold: Hold
    closed_ms: int | None
    request_id: str  # the authorizing request ('' after a rebuild from a snapshot)
    version: int


@dataclass(frozen=True)
class WalletRow:
    """The wallet's counters after the change."""

    wallet_id: str
    asset_code: str
    active: int
    overdraft_used: int
    held: int
    frozen: bool
    overdraft_limit: int
    seq: int
    version: int


@dataclass(frozen=True)
class StreamMessage:
    op: StreamOp
    wallet_id: str
    request_id: str
    now_ms: int
    entries: list[LedgerEntry]
    grants: list[GrantRow]
    holds: list[HoldRow]
    wallet: WalletRow
    request: RequestRecord | None  # the idempotency record, created_ms = now_ms
    result: str


_INT = re.compile(r"-?[0-9]+")


def _int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not _INT.fullmatch(value):
        raise MessageError(f"{what}: expected a decimal string, got {value!r}")
    return int(value)


def _list(value: Any, what: str) -> list[Any]:
    if value == {}:  # cjson cannot tell an empty list from an empty object
        return []
    if not isinstance(value, list):
        raise MessageError(f"{what}: expected a JSON list, got {value!r}")
    return value


def _json(raw: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except ValueError as err:
        raise MessageError(f"{what}: not JSON ({err})") from None


def _memo(raw: Any) -> dict[str, str]:
    memo = _json(raw, "entry memo") if raw else {}
    if memo == []:
        return {}
    if not isinstance(memo, dict):
        raise MessageError(f"entry memo: expected a JSON object, got {memo!r}")
    return {str(key): str(value) for key, value in memo.items()}


def _entry(item: Mapping[str, Any], wallet_id: str) -> LedgerEntry:
    return LedgerEntry(
        entry_id=item["id"],
        wallet_id=wallet_id,
        seq=_int(item["seq"], "entry seq"),
        kind=EntryKind(item["kind"]),
        request_id=item["rid"],
        occurred_ms=_int(item["at"], "entry at"),
        lines=[
            LedgerLine(account, asset, _int(amount, "line amount"))
            for account, asset, amount in _list(item["lines"], "entry lines")
        ],
        memo=_memo(item["memo"]),
    )


def _grant_row(item: Mapping[str, Any], wallet_id: str, now_ms: int) -> GrantRow:
    effective_ms = _int(item["effective"], "grant effective")
    expired = item["expired"] == "1"
    return GrantRow(
        grant=Grant(
            grant_id=item["id"],
            wallet_id=wallet_id,
            kind=GrantKind(item["kind"]),
            amount=_int(item["amount"], "grant amount"),
            remaining=_int(item["remaining"], "grant remaining"),
            priority=_int(item["priority"], "grant priority"),
            effective_ms=effective_ms,
            expires_ms=_int(item["expires"], "grant expires"),
            created_ms=_int(item["created"], "grant created"),
            refunded=_int(item["refunded"], "grant refunded"),
        ),
        expired=expired,
        pending=not expired and effective_ms > now_ms,
        version=_int(item["version"], "grant version"),
    )


def _hold_row(item: Mapping[str, Any], wallet_id: str) -> HoldRow:
    closed = item["closed"]
    expires_ms = _int(item["expires"], "hold expires")
    created_ms = _int(item["created"], "hold created")
    # Messages written before holds kept a TTL have none: the one the hold was given.
    ttl = item.get("ttl")
    return HoldRow(
        hold=Hold(
            hold_id=item["id"],
            wallet_id=wallet_id,
            state=HoldState(item["state"]),
            authorized=_int(item["authorized"], "hold authorized"),
            debited=_int(item["debited"], "hold debited"),
            captured=_int(item["captured"], "hold captured"),
            expires_ms=expires_ms,
            created_ms=created_ms,
            ttl_ms=expires_ms - created_ms if ttl is None else _int(ttl, "hold ttl"),
        ),
        closed_ms=_int(closed, "hold closed") if closed else None,
        request_id=item["rid"],
        version=_int(item["version"], "hold version"),
    )


def _wallet_row(item: Mapping[str, Any], wallet_id: str) -> WalletRow:
    return WalletRow(
        wallet_id=wallet_id,
        asset_code=item["asset"],
        active=_int(item["active"], "wallet active"),
        overdraft_used=_int(item["od"], "wallet od"),
        held=_int(item["held"], "wallet held"),
        frozen=item["frozen"] == "1",
        overdraft_limit=_int(item["limit"], "wallet limit"),
        seq=_int(item["seq"], "wallet seq"),
        version=_int(item["version"], "wallet version"),
    )


def _request(request_id: str, request_hash: str, result: str, now_ms: int) -> RequestRecord | None:
    if not request_hash:
        return None
    return RequestRecord(
        request_id=request_id, request_hash=request_hash, result=result, created_ms=now_ms
    )


def decode_message(fields: Mapping[bytes, bytes]) -> StreamMessage:
    """One ledger stream message; MessageError if it does not follow the format."""
    try:
        wallet_id = fields[b"w"].decode()
        request_id = fields[b"rid"].decode()
        now_ms = _int(fields[b"now"].decode(), "now")
        result = fields[b"result"].decode()
        return StreamMessage(
            op=StreamOp(fields[b"op"].decode()),
            wallet_id=wallet_id,
            request_id=request_id,
            now_ms=now_ms,
            entries=[
                _entry(item, wallet_id)
                for item in _list(_json(fields[b"entries"], "entries"), "entries")
            ],
            grants=[
                _grant_row(item, wallet_id, now_ms)
                for item in _list(_json(fields[b"grants"], "grants"), "grants")
            ],
            holds=[
                _hold_row(item, wallet_id)
                for item in _list(_json(fields[b"holds"], "holds"), "holds")
            ],
            wallet=_wallet_row(_json(fields[b"wallet"], "wallet"), wallet_id),
            request=_request(request_id, fields[b"hash"].decode(), result, now_ms),
            result=result,
        )
    except MessageError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise MessageError(f"malformed ledger message: {err!r}") from None


# ---- script results (also the stored idempotency results) ----


def decode_balance(wallet_id: str, item: Mapping[str, Any]) -> Balance:
    """The balance fields every result and read reply carries. (Results come straight
    from the scripts, so their numbers are read without the stream's strict checks.)"""
    return Balance(
        wallet_id=wallet_id,
        asset_code=item["asset"],
        active=int(item["active"]),
        overdraft_used=int(item["od"]),
        held=int(item["held"]),
        overdraft_limit=int(item["limit"]),
        frozen=item["frozen"] == "1",
        version=int(item["version"]),
        as_of_ms=int(item["at"]),
    )


def _result(raw: bytes | str) -> dict[str, Any]:
    item = _json(raw, "result")
    if not isinstance(item, dict):
        raise MessageError(f"result: expected a JSON object, got {item!r}")
    return item


def decode_mutation(wallet_id: str, raw: bytes | str, replayed: bool) -> MutationResult:
    item = _result(raw)
    return MutationResult(
        entry_ids=tuple(_list(item["entries"], "entries")),
        balance=decode_balance(wallet_id, item),
        replayed=replayed,
    )


def decode_void(wallet_id: str, raw: bytes | str, replayed: bool) -> VoidResult:
    item = _result(raw)
    return VoidResult(
        entry_ids=tuple(_list(item["entries"], "entries")),
        balance=decode_balance(wallet_id, item),
        replayed=replayed,
        released=_int(item.get("released", "0"), "released"),
    )


def decode_authorize(wallet_id: str, raw: bytes | str, replayed: bool) -> AuthorizeResult:
    item = _result(raw)
    return AuthorizeResult(
        entry_ids=tuple(_list(item["entries"], "entries")),
        balance=decode_balance(wallet_id, item),
        replayed=replayed,
        hold_id=item["hold"],
        held=int(item["amount"]),
        expires_ms=int(item["expires"]),
        auto_top_up_triggered=_top_up(item),
    )


def decode_capture(wallet_id: str, raw: bytes | str, replayed: bool) -> CaptureResult:
    item = _result(raw)
    return CaptureResult(
        entry_ids=tuple(_list(item["entries"], "entries")),
        balance=decode_balance(wallet_id, item),
        replayed=replayed,
        hold_id=item["hold"],
        charged=int(item["charged"]),
        released=int(item["released"]),
        draws=_draws(item),
        overdraft_drawn=int(item["overdraft"]),
        # Charges give nothing back (and results stored before reversals existed lack it).
        reversed=int(item.get("reversed", "0")),
        auto_top_up_triggered=_top_up(item),
    )


def decode_debit(wallet_id: str, raw: bytes | str, replayed: bool) -> DebitResult:
    item = _result(raw)
    return DebitResult(
        entry_ids=tuple(_list(item["entries"], "entries")),
        balance=decode_balance(wallet_id, item),
        replayed=replayed,
        hold_id=item["hold"],
        charged=int(item["charged"]),
        shortfall=int(item["shortfall"]),
        hold_remaining=int(item["remaining"]),
        hold_debited=int(item["debited"]),
        expires_ms=int(item["expires"]),
        draws=_draws(item),
        overdraft_drawn=int(item["overdraft"]),
        auto_top_up_triggered=_top_up(item),
    )


def decode_extend(wallet_id: str, raw: bytes | str, replayed: bool) -> ExtendHoldResult:
    item = _result(raw)
    return ExtendHoldResult(
        entry_ids=tuple(_list(item["entries"], "entries")),
        balance=decode_balance(wallet_id, item),
        replayed=replayed,
        hold_id=item["hold"],
        authorized=int(item["authorized"]),
        debited=int(item["debited"]),
        expires_ms=int(item["expires"]),
        created_ms=int(item["created"]),
        ttl_ms=int(item["ttl"]),
    )


def _top_up(item: Mapping[str, Any]) -> bool:
    """Whether a spend started an auto top-up attempt (results stored before auto top-up
    existed lack `top_up`)."""
    return bool(item.get("top_up") == "1")


def _draws(item: Mapping[str, Any]) -> tuple[Draw, ...]:
    return tuple(Draw(grant_id, int(amount)) for grant_id, amount in _list(item["draws"], "draws"))


def decode_grant(wallet_id: str, raw: bytes | str, replayed: bool) -> GrantResult:
    item = _result(raw)
    return GrantResult(
        entry_ids=tuple(_list(item["entries"], "entries")),
        balance=decode_balance(wallet_id, item),
        replayed=replayed,
        grant_id=item["grant"],
    )


def decode_grant_record(wallet_id: str, grant_id: str, record: bytes) -> Grant:
    """A grant as the `g` hash keeps it:
    `remaining|amount|priority|effective_ms|expires_ms|kind|created_ms|refunded`."""
    fields: Sequence[str] = record.decode().split("|")
    if len(fields) != 8:
        raise MessageError(f"grant {grant_id}: malformed record {record!r}")
    remaining, amount, priority, effective, expires, kind, created, refunded = fields
    return Grant(
        grant_id=grant_id,
        wallet_id=wallet_id,
        kind=GrantKind(kind),
        amount=_int(amount, "amount"),
        remaining=_int(remaining, "remaining"),
        priority=_int(priority, "priority"),
        effective_ms=_int(effective, "effective"),
        expires_ms=_int(expires, "expires"),
        created_ms=_int(created, "created"),
        refunded=_int(refunded, "refunded"),
    )

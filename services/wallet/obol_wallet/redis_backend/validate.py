"""Checks made in Python before any script runs: what Lua must be able to trust.

Amounts are ints in 0..2^53-1 (exact in a Lua double); times are epoch ms of at most 14
digits (the draw-order member pads them to 14); priorities fit 5 digits. A request hash is
stored as `<hash>|<result>`, so it must be non-empty and free of `|`.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from obol_core.errors import ValidationFailed
from obol_core.money import check_amount_range

from ..model import CostRecord, Idempotency

MAX_TIME_MS = 99_999_999_999_999
MAX_PRIORITY = 99_999


__all__ = [
    "MAX_PRIORITY",
    "MAX_TIME_MS",
    "amount",
    "cost",
    "duration_ms",
    "idempotency",
    "identifier",
    "memo_json",
    "positive_amount",
    "priority",
    "time_ms",
]


def amount(value: int, field: str) -> int:
    return check_amount_range(value, field)


def positive_amount(value: int, field: str) -> int:
    check_amount_range(value, field)
    if value == 0:
        raise ValidationFailed.for_field(field, "must be greater than 0")
    return value


def time_ms(value: int, field: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TIME_MS:
        raise ValidationFailed.for_field(field, f"must be epoch ms from 0 to {MAX_TIME_MS}")
    return value


def duration_ms(value: int, field: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_TIME_MS:
        raise ValidationFailed.for_field(field, f"must be from 1 to {MAX_TIME_MS} ms")
    return value


def priority(value: int) -> int:
    if type(value) is not int or not 0 <= value <= MAX_PRIORITY:
        raise ValidationFailed.for_field("priority", f"must be from 0 to {MAX_PRIORITY}")
    return value


def identifier(value: str, field: str) -> str:
    if not value:
        raise ValidationFailed.for_field(field, "is required")
    return value


def idempotency(idem: Idempotency) -> None:
    if not idem.request_id:
        raise ValidationFailed.for_field("request_id", "is required")
    if not idem.request_hash or "|" in idem.request_hash:
        raise ValidationFailed.for_field("request_hash", "must be a non-empty hex digest")


def cost(record: CostRecord | None) -> tuple[str, int]:
    """(currency, amount) for the scripts; ('', 0) for none."""
    if record is None:
        return "", 0
    if not record.currency:
        raise ValidationFailed.for_field("cost.currency", "is required")
    return record.currency, check_amount_range(record.amount, "cost.amount")


def memo_json(memo: Mapping[str, str], **extra: str) -> str:
    """The memo as the JSON object the ledger entry carries (`extra` wins on a clash)."""
    merged = {**memo, **extra} if memo else extra
    # Compact, keys sorted, UTF-8 as is (what json.dumps gives with separators=(",", ":"),
    # sort_keys=True, ensure_ascii=False), made in C: this runs for every batch item.
    return orjson.dumps(merged, option=orjson.OPT_SORT_KEYS).decode()

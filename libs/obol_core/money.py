"""Money as integers: atomic units, one rounding function, decimal strings for people.

An amount is an integer count of its asset's atomic unit (1e-9 of a currency unit: nanos).
Floats never appear: `divide` is the only place where rounding happens, and amounts that
Redis Lua (IEEE doubles) could not represent exactly are refused at the edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from obol.type.v1 import money_pb2

from .errors import AmountOutOfRange

NANOS = 10**9
INT64_MAX = 2**63 - 1
LUA_EXACT_MAX = 2**53 - 1
"""Largest integer a Lua number (an IEEE double) holds exactly."""

_AMOUNT_RE = re.compile(r"^([+-]?)([0-9]+)(?:\.([0-9]+))?$")

__all__ = [
    "INT64_MAX",
    "LUA_EXACT_MAX",
    "NANOS",
    "Money",
    "RoundingMode",
    "check_amount_range",
    "check_delta_range",
    "divide",
    "format_amount",
    "parse_amount",
]


class RoundingMode(Enum):
    """How `divide` resolves a remainder (names as in price books)."""

    HALF_EVEN = "half_even"
    """To nearest; ties to the even neighbour (banker's rounding)."""
    HALF_UP = "half_up"
    """To nearest; ties away from zero."""
    CEILING = "ceiling"
    """Towards +infinity."""
    FLOOR = "floor"
    """Towards -infinity."""
    UP = "up"
    """Away from zero (never under-charges)."""
    DOWN = "down"
    """Towards zero, i.e. truncation (never over-charges)."""


def _require_int(value: object, what: str) -> int:
    # bool is an int subclass and float sneaks in from JSON: refuse both.
    if type(value) is not int:
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    return value


def divide(numerator: int, denominator: int, mode: RoundingMode) -> int:
    """`numerator / denominator` rounded to an integer by `mode`, exactly, for any signs."""
    _require_int(numerator, "numerator")
    _require_int(denominator, "denominator")
    if denominator == 0:
        raise ZeroDivisionError("division by zero")
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    quotient, remainder = divmod(numerator, denominator)  # floor; 0 <= remainder < denominator
    if remainder == 0:
        return quotient
    # The exact value lies strictly between quotient and quotient + 1, so it is negative
    # exactly when quotient is.
    negative = quotient < 0
    if mode is RoundingMode.FLOOR:
        return quotient
    if mode is RoundingMode.CEILING:
        return quotient + 1
    if mode is RoundingMode.DOWN:
        return quotient + 1 if negative else quotient
    if mode is RoundingMode.UP:
        return quotient if negative else quotient + 1
    twice = 2 * remainder
    if twice != denominator:
        return quotient + 1 if twice > denominator else quotient
    # Exactly halfway between quotient and quotient + 1.
    if mode is RoundingMode.HALF_UP:
        return quotient if negative else quotient + 1
    return quotient if quotient % 2 == 0 else quotient + 1


def format_amount(amount: int, decimals: int) -> str:
    """Render atomic units as a decimal string.

    Trailing zeros are trimmed, but at least `min(decimals, 2)` fraction digits are kept,
    so currencies read naturally: (1_500_000_000, 9) -> "1.50", (1, 9) -> "0.000000001",
    (0, 9) -> "0.00", (-25, 1) -> "-2.5", (7, 0) -> "7".
    """
    _require_int(amount, "amount")
    _require_int(decimals, "decimals")
    if decimals < 0:
        raise ValueError("decimals must be >= 0")
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**decimals)
    if decimals == 0:
        return f"{sign}{whole}"
    digits = f"{fraction:0{decimals}d}".rstrip("0").ljust(min(decimals, 2), "0")
    return f"{sign}{whole}.{digits}"


def parse_amount(text: str, decimals: int) -> int:
    """Parse a decimal string ("12.5", "-0.000000001") into atomic units, exactly.

    Refused: more fraction digits than `decimals`, exponents, `inf`/`nan`, separators,
    whitespace, and anything that is not a `str` (floats in particular).
    """
    if not isinstance(text, str):
        raise TypeError(f"amount must be a decimal string, got {type(text).__name__}")
    _require_int(decimals, "decimals")
    if decimals < 0:
        raise ValueError("decimals must be >= 0")
    match = _AMOUNT_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a decimal amount such as 12 or 12.50")
    sign, whole, fraction = match.group(1), match.group(2), match.group(3) or ""
    if len(fraction) > decimals:
        raise ValueError(f"{text!r} has more than {decimals} decimal places")
    value: int = int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")
    return -value if sign == "-" else value


def check_amount_range(value: int, field: str) -> int:
    """Refuse (AmountOutOfRange naming `field`) an amount outside 0..LUA_EXACT_MAX."""
    return _check_range(value, field, 0)


def check_delta_range(value: int, field: str) -> int:
    """Like `check_amount_range` for signed values: -LUA_EXACT_MAX..LUA_EXACT_MAX."""
    return _check_range(value, field, -LUA_EXACT_MAX)


def _check_range(value: int, field: str, low: int) -> int:
    if type(value) is not int or not low <= value <= LUA_EXACT_MAX:
        raise AmountOutOfRange.for_field(
            field,
            f"must be an integer from {low} to {LUA_EXACT_MAX}, got {value!r}",
            metadata={"limit": LUA_EXACT_MAX},
        )
    return value


@dataclass(frozen=True)
class Money:
    """An amount of one asset in atomic units; the domain twin of `obol.type.v1.Money`."""

    asset_code: str
    amount: int

    def __post_init__(self) -> None:
        if not isinstance(self.asset_code, str) or not self.asset_code:
            raise ValueError("asset_code must be a non-empty string")
        _require_int(self.amount, "amount")

    @classmethod
    def from_proto(cls, message: money_pb2.Money) -> Money:
        return cls(asset_code=message.asset_code, amount=message.amount)

    def to_proto(self) -> money_pb2.Money:
        return money_pb2.Money(asset_code=self.asset_code, amount=self.amount)

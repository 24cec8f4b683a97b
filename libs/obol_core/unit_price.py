"""Unit prices: an integer amount of an asset's atomic units per `per_quantity` units.

AI list prices are often fractions of a nano per token (8.75e-9 USD = 8.75 nanos), so a
price is a ratio of integers and is turned into an amount only when a quantity is priced,
with one named rounding rule (see `obol_core.money.divide`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .money import RoundingMode, divide

# per_quantity stays within what the contract allows (obol.type.v1.UnitPrice).
MAX_PER_QUANTITY = 10**12


@dataclass(frozen=True)
class UnitPrice:
    asset_code: str
    amount: int
    per_quantity: int = 1

    def __post_init__(self) -> None:
        if type(self.amount) is not int or type(self.per_quantity) is not int:
            raise TypeError("UnitPrice amount and per_quantity must be int")
        if self.amount < 0:
            raise ValueError("a unit price must not be negative")
        if not 0 < self.per_quantity <= MAX_PER_QUANTITY:
            raise ValueError(f"per_quantity must be in 1..{MAX_PER_QUANTITY}")

    @classmethod
    def from_decimal(cls, asset_code: str, price: Decimal, decimals: int) -> UnitPrice:
        """Exactly `price` (in whole units of the asset, per one unit of quantity).

        `Decimal("8.75E-9")` USD with 9 decimals is 875 nanos per 100.
        """
        if not price.is_finite() or price < 0:
            raise ValueError(f"not a valid price: {price}")
        atomic = price.scaleb(decimals).normalize()
        exponent = int(atomic.as_tuple().exponent)
        if exponent >= 0:
            return cls(asset_code, int(atomic), 1)
        per_quantity = 10**-exponent
        if per_quantity > MAX_PER_QUANTITY:
            raise ValueError(f"price {price} is more precise than 1e-12 of an atomic unit")
        return cls(asset_code, int(atomic.scaleb(-exponent)), per_quantity)

    def price(self, quantity: int, mode: RoundingMode) -> int:
        """The amount for `quantity` units, rounded once with `mode`."""
        return divide(self.amount * quantity, self.per_quantity, mode)

"""Rate cards and rating: what a provider charges for usage, in integer nanos."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from obol_core.money import RoundingMode
from obol_core.unit_price import UnitPrice

from .errors import NoMatchingRate

# Costs are rounded half-to-even per line: unbiased over millions of small events.
COST_ROUNDING = RoundingMode.HALF_EVEN


@dataclass(frozen=True)
class RateCardEntry:
    entry_id: str
    provider: str
    model: str
    prices: Mapping[str, UnitPrice]


@dataclass(frozen=True)
class RateCard:
    rate_card_id: str
    version_id: str
    currency: str
    entries: Sequence[RateCardEntry]
    _index: dict[tuple[str, str], RateCardEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], RateCardEntry] = {}
        for entry in self.entries:
            index.setdefault((entry.provider, entry.model), entry)
        object.__setattr__(self, "_index", index)

    def entry_for(self, provider: str, model: str) -> RateCardEntry:
        entry = self._index.get((provider, model))
        if entry is None:
            raise NoMatchingRate(
                f"rate card {self.rate_card_id} has no entry for provider {provider!r}"
                f" model {model!r}",
                metadata={"rate_card_id": self.rate_card_id, "provider": provider, "model": model},
            )
        return entry


@dataclass(frozen=True)
class CostLine:
    quantity_key: str
    quantity: int
    unit_price: UnitPrice
    amount: int


@dataclass(frozen=True)
class RatedCost:
    card: RateCard
    entry: RateCardEntry
    lines: Sequence[CostLine]
    unrated_quantity_keys: Sequence[str]

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)


def rate(card: RateCard, dimensions: Mapping[str, str], quantities: Mapping[str, int]) -> RatedCost:
    """Rate each quantity key with its own price; each line is rounded once."""
    entry = card.entry_for(dimensions.get("provider", ""), dimensions.get("model", ""))
    lines: list[CostLine] = []
    unrated: list[str] = []
    for key, quantity in sorted(quantities.items()):
        price = entry.prices.get(key)
        if price is None:
            unrated.append(key)
            continue
        lines.append(CostLine(key, quantity, price, price.price(quantity, COST_ROUNDING)))
    return RatedCost(card, entry, lines, unrated)

"""The built-in `list-prices` rate card, from the provider list prices in data/.

Prices are read from the JSON text as exact decimals (`parse_float=Decimal`): reading them
as floats first would turn 1e-07 into 9.9999999999999995e-08 before we ever saw it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path

from obol_core.unit_price import UnitPrice

from .rate_card import RateCard, RateCardEntry

LIST_PRICES_PATH = Path(__file__).parent / "data" / "provider-prices.json"
LIST_PRICES_CARD_ID = "list-prices"
LIST_PRICES_VERSION_ID = "list-prices-litellm-1.110.2"
CURRENCY = "USD"
CURRENCY_DECIMALS = 9

# Usage quantity key -> the provider price fields that price it, first present wins.
_PRICE_FIELDS: dict[str, tuple[str, ...]] = {
    "input_tokens": ("input_cost_per_token",),
    "cached_input_tokens": ("cache_read_input_token_cost",),
    "cache_write_input_tokens": ("cache_creation_input_token_cost",),
    "output_tokens": ("output_cost_per_token",),
    "reasoning_tokens": ("output_cost_per_reasoning_token", "output_cost_per_token"),
    "images": ("output_cost_per_image", "input_cost_per_image"),
    "seconds": ("output_cost_per_second", "input_cost_per_second"),
    "characters": ("input_cost_per_character",),
}


def _entry(model: str, fields: dict[str, object]) -> RateCardEntry:
    prices: dict[str, UnitPrice] = {}
    for quantity_key, candidates in _PRICE_FIELDS.items():
        for name in candidates:
            value = fields.get(name)
            if isinstance(value, Decimal | int) and not isinstance(value, bool):
                prices[quantity_key] = UnitPrice.from_decimal(
                    CURRENCY, Decimal(value), CURRENCY_DECIMALS
                )
                break
    provider = str(fields["litellm_provider"])
    return RateCardEntry(
        entry_id=f"{provider}:{model}", provider=provider, model=model, prices=prices
    )


@cache
def list_prices_card() -> RateCard:
    """Parsed once per process; about 1,400 entries."""
    raw = json.loads(LIST_PRICES_PATH.read_text(encoding="utf-8"), parse_float=Decimal)
    entries = [_entry(model, fields) for model, fields in sorted(raw.items())]
    return RateCard(
        rate_card_id=LIST_PRICES_CARD_ID,
        version_id=LIST_PRICES_VERSION_ID,
        currency=CURRENCY,
        entries=entries,
    )

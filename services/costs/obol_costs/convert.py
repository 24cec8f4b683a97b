"""Conversion between protobuf messages and costs domain types: only at the service edge."""

from __future__ import annotations

from obol.costs.v1 import costs_pb2
from obol.type.v1 import money_pb2, usage_pb2

from obol_core.unit_price import UnitPrice

from .rate_card import RatedCost


def unit_price_to_proto(price: UnitPrice) -> money_pb2.UnitPrice:
    return money_pb2.UnitPrice(
        amount=money_pb2.Money(asset_code=price.asset_code, amount=price.amount),
        per_quantity=price.per_quantity,
    )


def rated_cost_to_proto(rated: RatedCost) -> costs_pb2.RateResponse:
    currency = rated.card.currency
    return costs_pb2.RateResponse(
        cost=money_pb2.Money(asset_code=currency, amount=rated.total),
        line_items=[
            usage_pb2.LineItem(
                description=f"{rated.entry.model} {line.quantity_key}",
                quantity_key=line.quantity_key,
                quantity=line.quantity,
                unit_price=unit_price_to_proto(line.unit_price),
                amount=money_pb2.Money(asset_code=currency, amount=line.amount),
            )
            for line in rated.lines
        ],
        rate_card_id=rated.card.rate_card_id,
        rate_card_version_id=rated.card.version_id,
        entry_id=rated.entry.entry_id,
        unrated_quantity_keys=list(rated.unrated_quantity_keys),
    )

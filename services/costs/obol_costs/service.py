"""The gRPC edge of the costs service: map requests to the domain and back.

Requests arrive validated (protovalidate, in the edge interceptor) and CostsError is
mapped to a rich status there too, so handlers only translate and delegate.
"""

from __future__ import annotations

from obol.costs.v1 import costs_pb2, costs_pb2_grpc

from obol_core.grpc_server import Context

from .convert import rated_cost_to_proto
from .errors import ResourceNotFound
from .list_prices import list_prices_card
from .rate_card import RateCard, rate

SERVICE_NAME = costs_pb2.DESCRIPTOR.services_by_name["CostsService"].full_name


def _select_card(selector: costs_pb2.RateCardSelector) -> RateCard:
    """Only the built-in list-price card exists until operator rate cards arrive."""
    card = list_prices_card()
    which = selector.WhichOneof("selector")
    if which == "rate_card_id" and selector.rate_card_id != card.rate_card_id:
        raise ResourceNotFound(
            f"no rate card {selector.rate_card_id!r}",
            metadata={"resource_type": "rate_card", "rate_card_id": selector.rate_card_id},
        )
    if which == "rate_card_version_id" and selector.rate_card_version_id != card.version_id:
        raise ResourceNotFound(
            f"no rate card version {selector.rate_card_version_id!r}",
            metadata={
                "resource_type": "rate_card_version",
                "rate_card_version_id": selector.rate_card_version_id,
            },
        )
    return card


class CostsService(costs_pb2_grpc.CostsServiceServicer):
    async def Rate(
        self, request: costs_pb2.RateRequest, context: Context
    ) -> costs_pb2.RateResponse:
        card = _select_card(request.rate_card)
        rated = rate(card, dict(request.usage.dimensions), dict(request.usage.quantities))
        return rated_cost_to_proto(rated)

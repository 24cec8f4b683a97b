"""The gRPC edge of the pricing service: map requests to the domain and back.

Requests arrive validated (protovalidate, in the edge interceptor) and PricingError is
mapped to a rich status there too, so handlers only translate and delegate.
"""

from __future__ import annotations

import asyncpg
from obol.pricing.v1 import pricing_pb2, pricing_pb2_grpc

from obol_core.grpc_server import Context
from obol_core.idempotency import run_once
from obol_core.pagination import decode_page_token, page_size, split_page
from obol_core.postgres import Queryable

from . import meters
from .convert import meter_spec_from_proto, meter_to_proto

SERVICE_NAME = pricing_pb2.DESCRIPTOR.services_by_name["PricingService"].full_name


class PricingService(pricing_pb2_grpc.PricingServiceServicer):
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def CreateMeter(
        self, request: pricing_pb2.CreateMeterRequest, context: Context
    ) -> pricing_pb2.CreateMeterResponse:
        async def create(conn: Queryable) -> pricing_pb2.CreateMeterResponse:
            spec = meter_spec_from_proto(request.meter_id, request.meter)
            return pricing_pb2.CreateMeterResponse(
                meter=meter_to_proto(await meters.create_meter(conn, spec))
            )

        return await run_once(
            self._pool,
            request_id=request.request_id,
            method="CreateMeter",
            request=request,
            response_type=pricing_pb2.CreateMeterResponse,
            mutation=create,
        )

    async def GetMeter(
        self, request: pricing_pb2.GetMeterRequest, context: Context
    ) -> pricing_pb2.GetMeterResponse:
        meter = await meters.get_meter(self._pool, request.meter_id)
        return pricing_pb2.GetMeterResponse(meter=meter_to_proto(meter))

    async def ListMeters(
        self, request: pricing_pb2.ListMetersRequest, context: Context
    ) -> pricing_pb2.ListMetersResponse:
        limit = page_size(request.page_size)
        rows = await meters.list_meters(
            self._pool,
            limit=limit + 1,
            after=decode_page_token(request.page_token),
            product_id=request.product_id,
        )
        page, next_token = split_page(rows, limit, lambda row: row.meter_id)
        return pricing_pb2.ListMetersResponse(
            meters=[meter_to_proto(row) for row in page], next_page_token=next_token
        )

"""Conversion between protobuf messages and pricing domain types: only at the service edge."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from obol.pricing.v1 import pricing_pb2

from .meters import Meter, MeterSpec


def meter_spec_from_proto(meter_id: str, message: pricing_pb2.Meter) -> MeterSpec:
    return MeterSpec(
        meter_id=meter_id,
        product_id=message.product_id,
        event_type=message.event_type,
        display_name=message.display_name,
        description=message.description,
        quantity_keys=tuple(message.quantity_keys),
        dimension_keys=tuple(message.dimension_keys),
    )


def meter_to_proto(meter: Meter) -> pricing_pb2.Meter:
    created = Timestamp()
    created.FromDatetime(meter.created_at)
    return pricing_pb2.Meter(
        meter_id=meter.meter_id,
        product_id=meter.product_id,
        event_type=meter.event_type,
        display_name=meter.display_name,
        description=meter.description,
        quantity_keys=list(meter.quantity_keys),
        dimension_keys=list(meter.dimension_keys),
        create_time=created,
    )

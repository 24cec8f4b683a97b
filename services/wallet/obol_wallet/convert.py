"""Conversion between protobuf messages and wallet domain types: only at the service edge."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from obol.wallet.v1 import wallet_pb2

from .customers import Customer, NewCustomer


def _timestamp(value: object) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)  # type: ignore[arg-type]
    return stamp


def new_customer_from_proto(message: wallet_pb2.Customer) -> NewCustomer:
    return NewCustomer(
        external_id=message.external_id,
        display_name=message.display_name,
        email=message.email,
        plan_id=message.plan_id,
        metadata=dict(message.metadata),
    )


def customer_to_proto(customer: Customer) -> wallet_pb2.Customer:
    return wallet_pb2.Customer(
        customer_id=customer.customer_id,
        external_id=customer.external_id,
        display_name=customer.display_name,
        email=customer.email,
        plan_id=customer.plan_id,
        metadata=dict(customer.metadata),
        create_time=_timestamp(customer.created_at),
        update_time=_timestamp(customer.updated_at),
        etag=str(customer.version),
    )

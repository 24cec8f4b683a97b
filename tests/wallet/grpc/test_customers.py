"""UpdateCustomer: field masks, etags, unique external ids."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from obol.wallet.v1 import wallet_pb2

from .harness import WalletApi


def _update(
    customer: wallet_pb2.Customer, paths: list[str], request_id: str
) -> wallet_pb2.UpdateCustomerRequest:
    return wallet_pb2.UpdateCustomerRequest(
        request_id=request_id, customer=customer, update_mask=FieldMask(paths=paths)
    )


async def test_update_writes_only_the_masked_fields_and_checks_the_etag(api: WalletApi) -> None:
    customer_id = await api.customer()
    got = await api.stub.GetCustomer(wallet_pb2.GetCustomerRequest(customer_id=customer_id))
    original = got.customer
    change = wallet_pb2.Customer(
        customer_id=customer_id,
        display_name="Renamed",
        email="new@example.com",
        etag=original.etag,
    )
    updated = await api.stub.UpdateCustomer(_update(change, ["display_name"], "u-1"))
    assert updated.customer.display_name == "Renamed"
    assert updated.customer.email == original.email  # not in the mask
    assert updated.customer.etag != original.etag

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await api.stub.UpdateCustomer(_update(change, ["email"], "u-2"))  # old etag
    assert stale.value.code() == grpc.StatusCode.ABORTED

    other = await api.customer()
    other_external = (
        await api.stub.GetCustomer(wallet_pb2.GetCustomerRequest(customer_id=other))
    ).customer.external_id
    taken = wallet_pb2.Customer(customer_id=customer_id, external_id=other_external)
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await api.stub.UpdateCustomer(_update(taken, ["external_id"], "u-3"))
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS

    with pytest.raises(grpc.aio.AioRpcError) as bad_mask:
        await api.stub.UpdateCustomer(_update(change, ["customer_id"], "u-4"))
    assert bad_mask.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    missing = wallet_pb2.Customer(customer_id="cus_nobody", display_name="x")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await api.stub.UpdateCustomer(_update(missing, ["display_name"], "u-5"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

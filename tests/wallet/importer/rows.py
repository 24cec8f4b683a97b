"""Building ImportCustomers streams and reading their results, for the importer tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from google.protobuf.timestamp_pb2 import Timestamp
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from ..grpc.harness import USD, WalletApi

DOLLAR = 1_000_000_000
Request = wallet_pb2.ImportCustomersRequest


def stub(api: WalletApi) -> wallet_pb2_grpc.WalletServiceAsyncStub:
    """The harness's stub, typed as what it is: an asyncio stub."""
    return cast("wallet_pb2_grpc.WalletServiceAsyncStub", api.stub)


def options(request_id: str, *, dry_run: bool = False, create_only: bool = False) -> Request:
    return Request(
        options=wallet_pb2.ImportCustomersOptions(
            request_id=request_id, dry_run=dry_run, create_only=create_only
        )
    )


def grant(
    external_id: str,
    amount: int,
    asset_code: str = USD,
    *,
    kind: wallet_pb2.GrantKind.ValueType = wallet_pb2.GRANT_KIND_ADJUSTMENT,
    expire_seconds: int | None = None,
) -> wallet_pb2.ImportGrant:
    message = wallet_pb2.ImportGrant(
        external_id=external_id,
        amount=money_pb2.Money(asset_code=asset_code, amount=amount),
        kind=kind,
    )
    if expire_seconds is not None:
        message.expire_time.CopyFrom(Timestamp(seconds=expire_seconds))
    return message


def wallet(
    asset_code: str = USD,
    grants: Sequence[wallet_pb2.ImportGrant] = (),
    *,
    overdraft: money_pb2.Money | None = None,
) -> wallet_pb2.ImportWallet:
    message = wallet_pb2.ImportWallet(asset_code=asset_code, grants=grants)
    if overdraft is not None:
        message.overdraft_limit.CopyFrom(overdraft)
    return message


def row(
    line_number: int,
    external_id: str,
    wallets: Sequence[wallet_pb2.ImportWallet] = (),
    *,
    display_name: str = "",
    email: str = "",
    metadata: dict[str, str] | None = None,
) -> Request:
    customer = wallet_pb2.Customer(
        external_id=external_id, display_name=display_name, email=email, metadata=metadata
    )
    return Request(
        row=wallet_pb2.ImportCustomerRow(
            line_number=line_number, customer=customer, wallets=wallets
        )
    )


async def run(api: WalletApi, *messages: Request) -> wallet_pb2.ImportCustomersResponse:
    return await stub(api).ImportCustomers(iter(messages))


def counts(response: wallet_pb2.ImportCustomersResponse) -> dict[str, int]:
    return {
        "received": response.rows_received,
        "created": response.customers_created,
        "updated": response.customers_updated,
        "unchanged": response.customers_unchanged,
        "failed": response.rows_failed,
        "wallets": response.wallets_created,
        "grants": response.grants_created,
    }


def errors(response: wallet_pb2.ImportCustomersResponse) -> set[tuple[int, str, str]]:
    return {(e.line_number, e.field, e.reason) for e in response.errors}


async def available(api: WalletApi, external_id: str, asset_code: str = USD) -> int:
    reply = await stub(api).GetWallet(
        wallet_pb2.GetWalletRequest(
            wallet=wallet_pb2.WalletSelector(
                external_customer_id=external_id, asset_code=asset_code
            )
        )
    )
    return reply.wallet.available.amount


async def customer(api: WalletApi, external_id: str) -> wallet_pb2.Customer:
    reply = await stub(api).GetCustomer(wallet_pb2.GetCustomerRequest(external_id=external_id))
    return reply.customer


async def customer_count(api: WalletApi) -> int:
    reply = await stub(api).ListCustomers(wallet_pb2.ListCustomersRequest(page_size=100))
    return len(reply.customers)

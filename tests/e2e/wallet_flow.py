"""A wallet charged over gRPC, as the end-to-end tests of a running stack need one."""

from __future__ import annotations

import asyncio

from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

Metadata = tuple[tuple[str, str], ...]


async def charged_wallet(
    wallet: wallet_pb2_grpc.WalletServiceStub, metadata: Metadata, tag: str
) -> tuple[str, wallet_pb2.ChargeResponse]:
    """A new EUR asset, customer and wallet, topped up with 10,000 nanos and charged 4,000
    (request ids `<tag>-...`, the charge's is `<tag>-charge`): the wallet id and the charge."""
    await wallet.CreateAsset(
        wallet_pb2.CreateAssetRequest(
            request_id=f"{tag}-asset",
            asset=wallet_pb2.Asset(
                asset_code="EUR", kind=wallet_pb2.ASSET_KIND_CURRENCY, decimals=9
            ),
        ),
        metadata=metadata,
    )
    customer = await wallet.CreateCustomer(
        wallet_pb2.CreateCustomerRequest(
            request_id=f"{tag}-customer", customer=wallet_pb2.Customer(external_id=tag)
        ),
        metadata=metadata,
    )
    created = await wallet.CreateWallet(
        wallet_pb2.CreateWalletRequest(
            request_id=f"{tag}-wallet", customer_id=customer.customer.customer_id, asset_code="EUR"
        ),
        metadata=metadata,
    )
    wallet_id = created.wallet.wallet_id
    selector = wallet_pb2.WalletSelector(wallet_id=wallet_id)
    await wallet.TopUp(
        wallet_pb2.TopUpRequest(
            request_id=f"{tag}-top-up",
            wallet=selector,
            amount=money_pb2.Money(asset_code="EUR", amount=10_000),
            payment_reference=f"pay-{tag}",
        ),
        metadata=metadata,
    )
    charged = await wallet.Charge(
        wallet_pb2.ChargeRequest(
            request_id=f"{tag}-charge",
            wallet=selector,
            amount=money_pb2.Money(asset_code="EUR", amount=4_000),
        ),
        metadata=metadata,
    )
    return wallet_id, charged


async def written_transactions(
    wallet: wallet_pb2_grpc.WalletServiceStub, metadata: Metadata, wallet_id: str, count: int
) -> list[str]:
    """The wallet's transactions as ListTransactions has them (so in the Postgres ledger),
    once the write-behind process has written `count` of them (it takes a fraction of a
    second), or after 10 s, whatever it has then."""
    listed: list[str] = []
    for _ in range(100):
        page = await wallet.ListTransactions(
            wallet_pb2.ListTransactionsRequest(wallet_id=wallet_id), metadata=metadata
        )
        listed = [t.transaction_id for t in page.transactions]
        if len(listed) >= count:
            break
        await asyncio.sleep(0.1)
    return listed

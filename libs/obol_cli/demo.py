"""Demo data for `obol run`, loaded once, on the first run against a data directory.

Everything goes through the services' public gRPC APIs with fixed request ids, so a
repeated load (say, after a crash between loading and writing the marker) changes nothing.
Later issues add price books and rate cards here.
"""

from __future__ import annotations

import grpc
from obol.pricing.v1 import pricing_pb2, pricing_pb2_grpc
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from .launcher import StackInfo

DEMO_CUSTOMERS = (
    ("acme", "Acme Robotics", "billing@acme.example"),
    ("globex", "Globex AI", "finance@globex.example"),
    ("initech", "Initech Labs", "ap@initech.example"),
)


DEMO_TOP_UP_NANOS = 25 * 1_000_000_000  # $25.00 each


def load_demo_data(stack: StackInfo) -> None:
    """Create USD, the demo customers with a $25 wallet each, and the LLM meter."""
    metadata = (("authorization", f"Bearer {stack.api_key}"),)
    with grpc.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        wallet.CreateAsset(
            wallet_pb2.CreateAssetRequest(
                request_id="demo-asset-usd",
                asset=wallet_pb2.Asset(
                    asset_code="USD",
                    kind=wallet_pb2.ASSET_KIND_CURRENCY,
                    decimals=9,
                    display_decimals=2,
                    display_name="US dollar",
                    symbol="$",
                ),
            ),
            metadata=metadata,
            timeout=10,
        )
        for external_id, name, email in DEMO_CUSTOMERS:
            customer = wallet.CreateCustomer(
                wallet_pb2.CreateCustomerRequest(
                    request_id=f"demo-customer-{external_id}",
                    customer=wallet_pb2.Customer(
                        external_id=external_id,
                        display_name=name,
                        email=email,
                        metadata={"source": "demo"},
                    ),
                ),
                metadata=metadata,
                timeout=10,
            ).customer
            created = wallet.CreateWallet(
                wallet_pb2.CreateWalletRequest(
                    request_id=f"demo-wallet-{external_id}",
                    customer_id=customer.customer_id,
                    asset_code="USD",
                ),
                metadata=metadata,
                timeout=10,
            ).wallet
            wallet.TopUp(
                wallet_pb2.TopUpRequest(
                    request_id=f"demo-top-up-{external_id}",
                    wallet=wallet_pb2.WalletSelector(wallet_id=created.wallet_id),
                    amount=money_pb2.Money(asset_code="USD", amount=DEMO_TOP_UP_NANOS),
                    payment_reference=f"demo-payment-{external_id}",
                ),
                metadata=metadata,
                timeout=10,
            )
    with grpc.insecure_channel(stack.addresses["pricing"]) as channel:
        pricing = pricing_pb2_grpc.PricingServiceStub(channel)
        pricing.CreateMeter(
            pricing_pb2.CreateMeterRequest(
                request_id="demo-meter-llm-completion",
                meter_id="llm-completion",
                meter=pricing_pb2.Meter(
                    event_type="llm.completion",
                    display_name="LLM completion",
                    quantity_keys=[
                        "input_tokens",
                        "cached_input_tokens",
                        "output_tokens",
                        "reasoning_tokens",
                    ],
                    dimension_keys=["provider", "model"],
                ),
            ),
            metadata=metadata,
            timeout=10,
        )

"""Demo data for `obol run`, loaded once, on the first run against a data directory.

Everything goes through the services' public gRPC APIs with fixed request ids, so a
repeated load (say, after a crash between loading and writing the marker) changes nothing.
Later issues add wallets, grants, price books and rate cards here.
"""

from __future__ import annotations

import grpc
from obol.pricing.v1 import pricing_pb2, pricing_pb2_grpc
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from .launcher import StackInfo

DEMO_CUSTOMERS = (
    ("acme", "Acme Robotics", "billing@acme.example"),
    ("globex", "Globex AI", "finance@globex.example"),
    ("initech", "Initech Labs", "ap@initech.example"),
)


def load_demo_data(stack: StackInfo) -> None:
    """Create the demo customers and the LLM completion meter."""
    metadata = (("authorization", f"Bearer {stack.api_key}"),)
    with grpc.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        for external_id, name, email in DEMO_CUSTOMERS:
            wallet.CreateCustomer(
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

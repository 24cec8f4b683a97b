"""An in-process wallet (tests/wallet/grpc/harness.py) with a custom unit to import into."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2

from ..grpc import harness
from ..grpc.harness import WalletApi
from .rows import stub

CREDITS = "credits"  # a custom unit with 2 decimals


@dataclass
class ImportApi:
    api: WalletApi
    target: str  # host:port of the running server


@pytest.fixture(params=["redis", "postgres"])
async def importing(
    request: pytest.FixtureRequest,
    fresh_database: str,
    redis_url: str,
) -> AsyncIterator[ImportApi]:
    async with harness.wallet_api(request.param, fresh_database, redis_url) as api:
        await stub(api).CreateAsset(
            wallet_pb2.CreateAssetRequest(
                request_id="asset-credits",
                asset=wallet_pb2.Asset(
                    asset_code=CREDITS,
                    kind=wallet_pb2.ASSET_KIND_CUSTOM_UNIT,
                    decimals=2,
                    display_decimals=2,
                    display_name="Credits",
                    exchange_rate=money_pb2.UnitPrice(
                        amount=money_pb2.Money(asset_code=harness.USD, amount=10_000_000),
                        per_quantity=100,
                    ),
                    exchange_rounding_mode=money_pb2.ROUNDING_MODE_HALF_EVEN,
                ),
            )
        )
        yield ImportApi(api, api.target)

"""A custom unit ("credits") wallet: charged in credits, revenue recognised in USD at the
asset's exchange rate, margin against the provider cost in USD."""

from __future__ import annotations

from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2

from .harness import USD, WalletApi, selector

CENT = 10_000_000  # nanos


def credits(amount: int) -> money_pb2.Money:
    return money_pb2.Money(asset_code="credits", amount=amount)


async def test_revenue_of_a_custom_unit_is_recognised_at_its_exchange_rate(
    api: WalletApi,
) -> None:
    await api.stub.CreateAsset(
        wallet_pb2.CreateAssetRequest(
            request_id="asset-credits",
            asset=wallet_pb2.Asset(
                asset_code="credits",
                kind=wallet_pb2.ASSET_KIND_CUSTOM_UNIT,
                decimals=0,
                display_name="Credits",
                # 1 credit = USD 0.01, i.e. 1 cent buys 1 credit; rounding named once here.
                exchange_rate=money_pb2.UnitPrice(
                    amount=money_pb2.Money(asset_code=USD, amount=CENT), per_quantity=1
                ),
                exchange_rounding_mode=money_pb2.ROUNDING_MODE_HALF_EVEN,
            ),
        )
    )
    customer_id = await api.customer()
    created = await api.stub.CreateWallet(
        wallet_pb2.CreateWalletRequest(
            request_id="w-credits", customer_id=customer_id, asset_code="credits"
        )
    )
    wallet_id = created.wallet.wallet_id
    await api.stub.TopUp(
        wallet_pb2.TopUpRequest(
            request_id="t-credits",
            wallet=selector(wallet_id),
            amount=credits(100),
            payment_reference="pay-credits",
        )
    )
    charged = await api.stub.Charge(
        wallet_pb2.ChargeRequest(
            request_id="c-credits",
            wallet=selector(wallet_id),
            amount=credits(7),
            provider_cost=money_pb2.Money(asset_code=USD, amount=3 * CENT),
        )
    )
    settlement = charged.settlement
    assert settlement.charged == credits(7)
    assert settlement.revenue == money_pb2.Money(asset_code=USD, amount=7 * CENT)
    assert settlement.margin == money_pb2.Money(asset_code=USD, amount=4 * CENT)
    assert charged.available == credits(93)

"""Every service starts as a real process and answers over real gRPC channels and HTTP."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import grpc.aio
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from obol.costs.v1 import costs_pb2, costs_pb2_grpc
from obol.pricing.v1 import pricing_pb2, pricing_pb2_grpc
from obol.type.v1 import money_pb2, usage_pb2
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from obol_cli.demo import load_demo_data
from obol_cli.launcher import StackInfo

from .wallet_flow import charged_wallet, written_transactions

GRPC_SERVICES = {
    "wallet": "obol.wallet.v1.WalletService",
    "pricing": "obol.pricing.v1.PricingService",
    "costs": "obol.costs.v1.CostsService",
}


def _metadata(stack: StackInfo) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.api_key}"),)


def _bad_request_fields(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None, "no google.rpc.Status in the trailers"
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


@pytest.mark.parametrize("name", sorted(GRPC_SERVICES))
async def test_health_and_reflection(stack: StackInfo, name: str) -> None:
    async with grpc.aio.insecure_channel(stack.addresses[name]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "readiness", GRPC_SERVICES[name]):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in reflection.ServerReflectionInfo(iter([request]), timeout=5)]
        listed = {s.name for s in replies[0].list_services_response.service}
        assert listed == {
            GRPC_SERVICES[name],
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }


async def test_wallet_customer_round_trip_is_stored_in_postgres(stack: StackInfo) -> None:
    async with grpc.aio.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        created = await wallet.CreateCustomer(
            wallet_pb2.CreateCustomerRequest(
                request_id="e2e-create-acme",
                customer=wallet_pb2.Customer(
                    external_id="acme-e2e", display_name="Acme", metadata={"tier": "gold"}
                ),
            ),
            metadata=_metadata(stack),
        )
        assert created.customer.customer_id.startswith("cus_")
        fetched = await wallet.GetCustomer(
            wallet_pb2.GetCustomerRequest(customer_id=created.customer.customer_id),
            metadata=_metadata(stack),
        )
        assert fetched.customer == created.customer
        by_external = await wallet.GetCustomer(
            wallet_pb2.GetCustomerRequest(external_id="acme-e2e"), metadata=_metadata(stack)
        )
        assert by_external.customer.customer_id == created.customer.customer_id

    conn = await asyncpg.connect(stack.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT external_id, display_name, metadata::text AS metadata"
            " FROM wallet.customers WHERE customer_id = $1",
            created.customer.customer_id,
        )
    finally:
        await conn.close()
    assert row is not None
    assert (row["external_id"], row["display_name"]) == ("acme-e2e", "Acme")
    assert row["metadata"] == '{"tier": "gold"}'


async def test_create_customer_is_idempotent(stack: StackInfo) -> None:
    async with grpc.aio.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        request = wallet_pb2.CreateCustomerRequest(
            request_id="e2e-idem-1", customer=wallet_pb2.Customer(external_id="idem-e2e")
        )
        first = await wallet.CreateCustomer(request, metadata=_metadata(stack))
        again = await wallet.CreateCustomer(request, metadata=_metadata(stack))
        assert again.customer.customer_id == first.customer.customer_id

        different = wallet_pb2.CreateCustomerRequest(
            request_id="e2e-idem-1", customer=wallet_pb2.Customer(external_id="other-e2e")
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await wallet.CreateCustomer(different, metadata=_metadata(stack))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        listed = await wallet.ListCustomers(
            wallet_pb2.ListCustomersRequest(page_size=1000), metadata=_metadata(stack)
        )
        assert "other-e2e" not in {c.external_id for c in listed.customers}


async def test_bad_requests_name_the_field_and_change_nothing(stack: StackInfo) -> None:
    async with grpc.aio.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await wallet.CreateCustomer(
                wallet_pb2.CreateCustomerRequest(
                    customer=wallet_pb2.Customer(external_id="no-request-id")
                ),
                metadata=_metadata(stack),
            )
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "request_id" in _bad_request_fields(missing.value)

        with pytest.raises(grpc.aio.AioRpcError) as negative:
            await wallet.TopUp(
                wallet_pb2.TopUpRequest(
                    request_id="e2e-negative",
                    wallet=wallet_pb2.WalletSelector(wallet_id="wal_x"),
                    amount=money_pb2.Money(asset_code="USD", amount=-5),
                    payment_reference="pay_1",
                ),
                metadata=_metadata(stack),
            )
        assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "amount" in _bad_request_fields(negative.value)

        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await wallet.GetCustomer(
                wallet_pb2.GetCustomerRequest(external_id="no-request-id"),
                metadata=_metadata(stack),
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_calls_without_a_key_are_refused(stack: StackInfo) -> None:
    async with grpc.aio.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await wallet.ListCustomers(wallet_pb2.ListCustomersRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_pricing_meter_round_trip(stack: StackInfo) -> None:
    async with grpc.aio.insecure_channel(stack.addresses["pricing"]) as channel:
        pricing = pricing_pb2_grpc.PricingServiceStub(channel)
        await pricing.CreateMeter(
            pricing_pb2.CreateMeterRequest(
                request_id="e2e-meter",
                meter_id="e2e-completion",
                meter=pricing_pb2.Meter(
                    event_type="e2e.completion",
                    quantity_keys=["input_tokens", "output_tokens"],
                    dimension_keys=["model", "provider"],
                ),
            ),
            metadata=_metadata(stack),
        )
        fetched = await pricing.GetMeter(
            pricing_pb2.GetMeterRequest(meter_id="e2e-completion"), metadata=_metadata(stack)
        )
        assert fetched.meter.event_type == "e2e.completion"
        assert list(fetched.meter.quantity_keys) == ["input_tokens", "output_tokens"]


async def test_costs_rates_each_token_kind_with_its_own_price(stack: StackInfo) -> None:
    async with grpc.aio.insecure_channel(stack.addresses["costs"]) as channel:
        costs = costs_pb2_grpc.CostsServiceStub(channel)
        reply = await costs.Rate(
            costs_pb2.RateRequest(
                usage=usage_pb2.Usage(
                    event_type="llm.completion",
                    dimensions={"provider": "openai", "model": "gpt-4o"},
                    quantities={
                        "input_tokens": 1000,
                        "cached_input_tokens": 500,
                        "output_tokens": 200,
                    },
                )
            ),
            metadata=_metadata(stack),
        )
    # gpt-4o list prices: input $2.50/M, cached input $1.25/M, output $10/M tokens.
    by_key = {line.quantity_key: line.amount.amount for line in reply.line_items}
    assert by_key == {
        "input_tokens": 2_500_000,
        "cached_input_tokens": 625_000,
        "output_tokens": 2_000_000,
    }
    assert reply.cost == money_pb2.Money(asset_code="USD", amount=5_125_000)
    assert reply.rate_card_version_id


async def test_portal_answers_http(stack: StackInfo) -> None:
    async with httpx.AsyncClient(base_url=stack.portal_url, timeout=5) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        page = await client.get("/")
        assert page.status_code == 200
        assert "Obol billing portal" in page.text


async def test_list_customers_pages_through_everything(stack: StackInfo) -> None:
    async with grpc.aio.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        for index in range(3):
            await wallet.CreateCustomer(
                wallet_pb2.CreateCustomerRequest(
                    request_id=f"e2e-page-{index}",
                    customer=wallet_pb2.Customer(external_id=f"page-{index}", plan_id="pager"),
                ),
                metadata=_metadata(stack),
            )
        seen: list[str] = []
        token = ""
        while True:
            page = await wallet.ListCustomers(
                wallet_pb2.ListCustomersRequest(page_size=2, page_token=token, plan_id="pager"),
                metadata=_metadata(stack),
            )
            seen.extend(c.external_id for c in page.customers)
            token = page.next_page_token
            if not token:
                break
        assert seen == ["page-0", "page-1", "page-2"]

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await wallet.ListCustomers(
                wallet_pb2.ListCustomersRequest(page_token="not-a-token"),
                metadata=_metadata(stack),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _bad_request_fields(caught.value) == ["page_token"]


async def test_demo_data_loads_and_reloading_changes_nothing(stack: StackInfo) -> None:
    await asyncio.to_thread(load_demo_data, stack)
    await asyncio.to_thread(load_demo_data, stack)
    async with grpc.aio.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        listed = await wallet.ListCustomers(
            wallet_pb2.ListCustomersRequest(page_size=1000), metadata=_metadata(stack)
        )
        demo = [c for c in listed.customers if c.metadata.get("source") == "demo"]
        assert sorted(c.external_id for c in demo) == ["acme", "globex", "initech"]
        acme = await wallet.GetWallet(
            wallet_pb2.GetWalletRequest(
                wallet=wallet_pb2.WalletSelector(external_customer_id="acme", asset_code="USD")
            ),
            metadata=_metadata(stack),
        )
    assert acme.wallet.available.amount == 25 * 1_000_000_000  # topped up once, not twice


async def test_a_charge_reaches_the_postgres_ledger_through_the_write_behind_process(
    stack: StackInfo,
) -> None:
    async with grpc.aio.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        wallet_id, charged = await charged_wallet(wallet, _metadata(stack), "wb-e2e")
        listed = await written_transactions(wallet, _metadata(stack), wallet_id, 2)
        assert charged.transaction_id in listed  # after the top-up
        verified = await wallet.VerifyLedger(
            wallet_pb2.VerifyLedgerRequest(wallet_id=wallet_id), metadata=_metadata(stack)
        )
    assert verified.valid and verified.balance_matches
    assert verified.live_balance.amount == 6_000

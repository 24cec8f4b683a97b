"""ImportCustomers over real gRPC, on both backends, against real Postgres (and Redis)."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2

from ..grpc.harness import START_MS, USD
from .conftest import CREDITS, ImportApi
from .rows import (
    DOLLAR,
    Request,
    available,
    counts,
    customer,
    customer_count,
    errors,
    grant,
    options,
    row,
    run,
    wallet,
)

LATER_S = START_MS // 1000 + 86_400 * 30  # a month after the test clock's now


def _migration(request_id: str, *, dry_run: bool = False) -> list[Request]:
    return [
        options(request_id, dry_run=dry_run),
        row(
            2,
            "acme",
            [wallet(USD, [grant("bal-1", 12 * DOLLAR + DOLLAR // 2)])],
            display_name="Acme",
            email="billing@acme.example",
            metadata={"tier": "gold"},
        ),
        row(
            3,
            "globex",
            [
                wallet(USD, overdraft=money_pb2.Money(asset_code=USD, amount=5 * DOLLAR)),
                wallet(
                    CREDITS,
                    [
                        grant("open", 1_000, CREDITS),
                        grant(
                            "promo",
                            250,
                            CREDITS,
                            kind=wallet_pb2.GRANT_KIND_INCLUDED,
                            expire_seconds=LATER_S,
                        ),
                    ],
                ),
            ],
            display_name="Globex",
        ),
        row(4, "initech"),
    ]


_CREATED = {
    "received": 3,
    "created": 3,
    "updated": 0,
    "unchanged": 0,
    "failed": 0,
    "wallets": 3,
    "grants": 3,
}


async def test_import_creates_customers_wallets_and_opening_grants(importing: ImportApi) -> None:
    api = importing.api
    response = await run(api, *_migration("migrate-1"))
    assert counts(response) == _CREATED
    assert not response.errors and not response.dry_run
    acme = await customer(api, "acme")
    assert (acme.display_name, acme.email, dict(acme.metadata)) == (
        "Acme",
        "billing@acme.example",
        {"tier": "gold"},
    )
    assert await available(api, "acme") == 12 * DOLLAR + DOLLAR // 2
    assert await available(api, "globex") == 5 * DOLLAR  # the overdraft limit only
    assert await available(api, "globex", CREDITS) == 1_250
    assert await customer_count(api) == 3


async def test_dry_run_reports_the_same_counts_and_writes_nothing(importing: ImportApi) -> None:
    api = importing.api
    dry = await run(api, *_migration("migrate-1", dry_run=True))
    assert dry.dry_run
    assert counts(dry) == _CREATED
    assert await customer_count(api) == 0
    real = await run(api, *_migration("migrate-1"))  # the dry run did not claim the id
    assert counts(real) == counts(dry)
    again = await run(api, *_migration("migrate-2", dry_run=True))
    assert counts(again) == {**_CREATED, "created": 0, "unchanged": 3, "wallets": 0, "grants": 0}


async def test_reimport_changes_nothing(importing: ImportApi) -> None:
    api = importing.api
    first = await run(api, *_migration("migrate-1"))
    second = await run(api, *_migration("migrate-2"))
    assert counts(second) == {
        **_CREATED,
        "created": 0,
        "unchanged": 3,
        "wallets": 0,
        "grants": 0,
    }
    assert await available(api, "acme") == 12 * DOLLAR + DOLLAR // 2
    assert await available(api, "globex", CREDITS) == 1_250
    # The same request id again: the first result, and still nothing applied twice.
    assert await run(api, *_migration("migrate-1")) == first
    assert await available(api, "acme") == 12 * DOLLAR + DOLLAR // 2
    assert await customer_count(api) == 3


async def test_changed_rows_update_customers_and_add_new_grants(importing: ImportApi) -> None:
    api = importing.api
    await run(api, *_migration("migrate-1"))
    response = await run(
        api,
        options("migrate-2"),
        row(2, "acme", [wallet(USD, [grant("bal-1", 12 * DOLLAR + DOLLAR // 2)])]),
        row(
            3,
            "globex",
            [wallet(USD, overdraft=money_pb2.Money(asset_code=USD, amount=7 * DOLLAR))],
            display_name="Globex",
        ),
        row(4, "initech", [wallet(USD, [grant("bonus", DOLLAR)])]),
    )
    assert counts(response) == {
        "received": 3,
        "created": 0,
        "updated": 2,  # acme: fields cleared; globex: a new overdraft limit
        "unchanged": 1,
        "failed": 0,
        "wallets": 1,
        "grants": 1,
    }
    acme = await customer(api, "acme")
    assert (acme.display_name, acme.email, dict(acme.metadata)) == ("", "", {})
    assert await available(api, "globex") == 7 * DOLLAR
    assert await available(api, "initech") == DOLLAR


async def test_every_bad_row_is_reported_by_line_and_field(importing: ImportApi) -> None:
    api = importing.api
    response = await run(
        api,
        options("bad-1"),
        row(2, "ok-1", [wallet(USD, [grant("g", DOLLAR)])]),
        row(3, "bad-email", email="not-an-email"),
        row(4, ""),  # no external_id
        row(5, "bad-asset", [wallet("NOPE")]),
        row(6, "negative", [wallet(USD, [grant("g", -DOLLAR)])]),
        row(7, "ok-1"),  # already on line 2
        row(
            8,
            "mismatch",
            [wallet(USD, overdraft=money_pb2.Money(asset_code=CREDITS, amount=1))],
        ),
        row(9, "grant-asset", [wallet(USD, [grant("g", 5, CREDITS)])]),
        row(10, "twice", [wallet(USD, [grant("g", 1), grant("g", 2)]), wallet(USD)]),
        row(11, "expired", [wallet(USD, [grant("g", 1, expire_seconds=START_MS // 2000)])]),
        row(12, "ok-2", email="ok@example.com"),
    )
    assert errors(response) == {
        (3, "customer.email", "VALIDATION_FAILED"),
        (4, "customer", "VALIDATION_FAILED"),
        (5, "wallets[0].asset_code", "UNKNOWN_ASSET"),
        (6, "wallets[0].grants[0].amount", "VALIDATION_FAILED"),
        (7, "customer.external_id", "VALIDATION_FAILED"),
        (8, "wallets[0].overdraft_limit.asset_code", "ASSET_MISMATCH"),
        (9, "wallets[0]", "VALIDATION_FAILED"),
        (10, "wallets[0].grants[1].external_id", "VALIDATION_FAILED"),
        (10, "wallets[1].asset_code", "VALIDATION_FAILED"),
        (11, "wallets[0].grants[0].expire_time", "VALIDATION_FAILED"),
    }
    by_line = {e.line_number: e for e in response.errors}
    assert by_line[3].external_id == "bad-email"
    assert "line 2" in by_line[7].message
    assert counts(response) == {
        "received": 11,
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "failed": 9,
        "wallets": 1,
        "grants": 1,
    }
    assert await customer_count(api) == 2  # bad rows changed nothing


async def test_create_only_refuses_existing_customers(importing: ImportApi) -> None:
    api = importing.api
    await run(api, options("first"), row(2, "acme", display_name="Acme"))
    response = await run(
        api,
        options("second", create_only=True),
        row(2, "acme", display_name="Renamed"),
        row(3, "globex"),
    )
    assert errors(response) == {(2, "customer.external_id", "RESOURCE_ALREADY_EXISTS")}
    assert (response.customers_created, response.rows_failed) == (1, 1)
    assert (await customer(api, "acme")).display_name == "Acme"


async def test_a_grant_imported_again_with_other_content_is_refused(importing: ImportApi) -> None:
    api = importing.api
    await run(api, options("first"), row(2, "acme", [wallet(USD, [grant("bal", DOLLAR)])]))
    response = await run(
        api, options("second"), row(2, "acme", [wallet(USD, [grant("bal", 2 * DOLLAR)])])
    )
    assert errors(response) == {(2, "wallets[0].grants[0].external_id", "IDEMPOTENCY_KEY_REUSED")}
    assert await available(api, "acme") == DOLLAR


async def test_the_stream_must_start_with_options(importing: ImportApi) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await run(importing.api, row(2, "acme"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await customer_count(importing.api) == 0


async def test_a_reused_request_id_with_other_rows_is_refused(importing: ImportApi) -> None:
    api = importing.api
    await run(api, options("once"), row(2, "acme"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await run(api, options("once"), row(2, "globex"))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await customer_count(api) == 1

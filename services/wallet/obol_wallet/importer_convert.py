"""The gRPC edge of ImportCustomers: the stream in, rows out to the importer, the summary back.

The stream is read as sent (`obol_core.streams.raw_requests`), not through the edge interceptor's
validating iterator: that one fails the whole call on the first invalid message, while an
import reports a bad row and goes on. Every message is still validated here, with the same
protovalidate rules: the options (a bad one fails the call), then each row on its own.

The import's request_id makes the whole call idempotent: a repeat with the same messages
returns the first response and applies nothing; different messages under the same id fail
with ALREADY_EXISTS / IDEMPOTENCY_KEY_REUSED. A dry run neither reads nor writes that record.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator

import asyncpg
from obol.wallet.v1 import wallet_pb2

from obol_core.errors import ValidationFailed
from obol_core.idempotency import IdempotencyKeyReused, request_fingerprint
from obol_core.money import Money
from obol_core.validation import validate_request

from .convert import grant_kind_from_proto, new_customer_from_proto, timestamp_to_ms
from .core import WalletCore
from .importer import (
    GrantLine,
    ImportOptions,
    ImportRecord,
    ImportRow,
    ImportSummary,
    RejectedRow,
    RowError,
    WalletLine,
    load_import_record,
    run_import,
    save_import_record,
)
from .model import NEVER_EXPIRES, GrantKind

# Draw priority of a grant that names none, by kind (see GrantKind in wallet.proto).
DEFAULT_PRIORITY_BY_KIND = {
    GrantKind.PURCHASED: 100,
    GrantKind.INCLUDED: 10,
    GrantKind.PROMOTIONAL: 20,
    GrantKind.ROLLOVER: 10,
    GrantKind.ADJUSTMENT: 50,
}

Request = wallet_pb2.ImportCustomersRequest


async def import_customers(
    core: WalletCore,
    pool: asyncpg.Pool[asyncpg.Record],
    request_iterator: AsyncIterable[Request],
) -> wallet_pb2.ImportCustomersResponse:
    """The ImportCustomers RPC: `options` first, then rows; the summary at the end."""
    digest = hashlib.sha256(b"ImportCustomers")
    stream = _hashed(request_iterator, digest)
    first = await anext(stream, None)
    if first is None or first.WhichOneof("item") != "options":
        raise ValidationFailed.for_field("options", "the first message must carry options")
    validate_request(first)
    options = ImportOptions(
        request_id=first.options.request_id,
        dry_run=first.options.dry_run,
        create_only=first.options.create_only,
    )
    if options.dry_run:
        return summary_to_proto(await run_import(core, pool, options, _rows(stream)))
    stored = await load_import_record(pool, options.request_id)
    if stored is None:
        summary = await run_import(core, pool, options, _rows(stream))
        result = summary_to_proto(summary).SerializeToString(deterministic=True)
        stored = await save_import_record(
            pool, options.request_id, ImportRecord(digest.digest(), result)
        )
    else:
        async for _ in stream:  # a repeat: read it all to compare it with the first
            pass
    if stored.request_hash != digest.digest():
        raise IdempotencyKeyReused(
            f"request_id {options.request_id!r} was already used for a different import",
            metadata={"request_id": options.request_id, "method": "ImportCustomers"},
        )
    return wallet_pb2.ImportCustomersResponse.FromString(stored.result)


async def _hashed(
    requests: AsyncIterable[Request], digest: hashlib._Hash
) -> AsyncIterator[Request]:
    """The messages, each also added (length-prefixed) to `digest`."""
    async for message in requests:
        data = message.SerializeToString(deterministic=True)
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
        yield message


async def _rows(stream: AsyncIterator[Request]) -> AsyncIterator[ImportRow | RejectedRow]:
    async for message in stream:
        if message.WhichOneof("item") != "row":
            raise ValidationFailed.for_field(
                "item", "every message after the first must carry a row"
            )
        yield row_from_proto(message.row)


def row_from_proto(message: wallet_pb2.ImportCustomerRow) -> ImportRow | RejectedRow:
    """The row, or its schema violations (each by field path within the row)."""
    external_id = message.customer.external_id
    try:
        validate_request(message)
    except ValidationFailed as err:
        errors = [
            RowError(message.line_number, external_id, v.field, v.description, err.reason)
            for v in err.field_violations
        ]
        return RejectedRow(message.line_number, external_id, errors)
    return ImportRow(
        line_number=message.line_number,
        customer=new_customer_from_proto(message.customer),
        wallets=[_wallet_from_proto(wallet) for wallet in message.wallets],
    )


def _wallet_from_proto(message: wallet_pb2.ImportWallet) -> WalletLine:
    limit = None
    if message.HasField("overdraft_limit"):
        limit = Money(message.overdraft_limit.asset_code, message.overdraft_limit.amount)
    return WalletLine(
        asset_code=message.asset_code,
        overdraft_limit=limit,
        grants=[_grant_from_proto(grant) for grant in message.grants],
    )


def _grant_from_proto(message: wallet_pb2.ImportGrant) -> GrantLine:
    kind = grant_kind_from_proto(message.kind)
    return GrantLine(
        external_id=message.external_id,
        amount=message.amount.amount,
        kind=kind,
        priority=message.priority
        if message.HasField("priority")
        else DEFAULT_PRIORITY_BY_KIND[kind],
        effective_ms=timestamp_to_ms(message.effective_time)
        if message.HasField("effective_time")
        else None,
        expires_ms=timestamp_to_ms(message.expire_time)
        if message.HasField("expire_time")
        else NEVER_EXPIRES,
        description=message.description,
        request_hash=request_fingerprint("ImportGrant", message).hex(),
    )


def summary_to_proto(summary: ImportSummary) -> wallet_pb2.ImportCustomersResponse:
    return wallet_pb2.ImportCustomersResponse(
        dry_run=summary.dry_run,
        rows_received=summary.rows_received,
        customers_created=summary.customers_created,
        customers_updated=summary.customers_updated,
        customers_unchanged=summary.customers_unchanged,
        rows_failed=summary.rows_failed,
        wallets_created=summary.wallets_created,
        grants_created=summary.grants_created,
        errors=[
            wallet_pb2.ImportRowError(
                line_number=e.line_number,
                external_id=e.external_id,
                field=e.field,
                message=e.message,
                reason=e.reason,
            )
            for e in summary.errors
        ],
    )

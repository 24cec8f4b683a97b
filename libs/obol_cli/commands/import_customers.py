"""`obol import FILE`: migrate customers, their wallets and opening balances into Obol.

The file's rows are streamed to the wallet's ImportCustomers RPC, each with its line number.
Rows are upserted by external_id, wallets are created if missing and opening balances are
imported once (by grant external id): running the same file again changes nothing. Bad
rows are listed as `line N: field: message` and do not stop the others; the exit status is
1 if any row was bad. --dry-run reports what would change without changing anything.

CSV (--format csv, or a .csv file): a header line, then one customer per line; only
external_id is required, unknown columns are refused. Amounts are decimals in the asset's
units ("12.50"), with at most as many decimals as the asset has.

  external_id        the customer's id in your system: the upsert key
  display_name       name shown in the portal
  email              billing contact
  plan_id            a pricing plan id
  metadata           a JSON object of strings, e.g. {"tier": "gold"}
  asset_code         the customer's wallet, created if missing (USD, credits, ...)
  overdraft_limit    decimal; empty keeps the wallet's current limit (0 for a new one)
  opening_balance    decimal; empty or zero: no opening grant
  grant_external_id  the opening grant's id in your system (default "opening-balance")
  grant_kind         adjustment (default), purchased, included, promotional or rollover
  expire_time        when the opening grant expires, ISO-8601 (2027-01-31T00:00:00Z;
                     UTC if no offset); empty: never

A row is the customer's whole state: an empty display_name, email, plan_id or metadata
clears the stored one. A customer with several wallets or grants needs JSONL.

JSONL (--format jsonl, or a .jsonl/.ndjson file): one ImportCustomersRequest.row per line in
proto JSON (see docs/import.md), amounts in atomic units; line_number is set from the file:

  {"customer": {"externalId": "acme", "email": "billing@acme.example"},
   "wallets": [{"assetCode": "USD", "grants": [{"externalId": "balance-2026",
     "kind": "GRANT_KIND_ADJUSTMENT", "amount": {"assetCode": "USD", "amount": "12500000000"}}]}]}
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import grpc
import grpc.aio
from google.protobuf import json_format
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from obol_core.grpc_client import create_channel
from obol_core.ids import new_ulid
from obol_core.money import parse_amount

from ..errors import ObolCliError

COLUMNS = (
    "external_id",
    "display_name",
    "email",
    "plan_id",
    "metadata",
    "asset_code",
    "overdraft_limit",
    "opening_balance",
    "grant_external_id",
    "grant_kind",
    "expire_time",
)
DEFAULT_GRANT_ID = "opening-balance"
PROGRESS_EVERY = 1000
_GRANT_KINDS = {
    "adjustment": wallet_pb2.GRANT_KIND_ADJUSTMENT,
    "purchased": wallet_pb2.GRANT_KIND_PURCHASED,
    "included": wallet_pb2.GRANT_KIND_INCLUDED,
    "promotional": wallet_pb2.GRANT_KIND_PROMOTIONAL,
    "rollover": wallet_pb2.GRANT_KIND_ROLLOVER,
}
# The CSV column behind each field path the service reports (most specific first).
_CSV_FIELDS = (
    ("customer.external_id", "external_id"),
    ("customer.display_name", "display_name"),
    ("customer.email", "email"),
    ("customer.plan_id", "plan_id"),
    ("customer.metadata", "metadata"),
    ("customer", "external_id"),
    ("wallets[0].asset_code", "asset_code"),
    ("wallets[0].overdraft_limit", "overdraft_limit"),
    ("wallets[0].grants[0].external_id", "grant_external_id"),
    ("wallets[0].grants[0].kind", "grant_kind"),
    ("wallets[0].grants[0].expire_time", "expire_time"),
    ("wallets[0].grants[0]", "opening_balance"),
    ("wallets[0]", "asset_code"),
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import",
        help="import customers, wallets and opening balances from a CSV or JSONL file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="the CSV or JSONL file")
    parser.add_argument("--format", choices=("csv", "jsonl"), help="default: by extension")
    parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
    parser.add_argument(
        "--create-only", action="store_true", help="an existing customer is an error"
    )
    parser.add_argument(
        "--request-id",
        help="idempotency key of this import (default: a new one, printed); "
        "repeating it returns the first result",
    )
    parser.add_argument(
        "--target",
        default=os.environ.get("OBOL_WALLET_TARGET", "127.0.0.1:50051"),
        help="the wallet service, host:port (default: $OBOL_WALLET_TARGET or %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OBOL_API_KEY"),
        help="an admin API key (default: $OBOL_API_KEY)",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds for the whole import"
    )
    parser.set_defaults(handler=import_file)


@dataclass(frozen=True)
class BadRow:
    line_number: int
    field: str
    message: str


class _Refused(Exception):
    """A row this command cannot turn into a message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def import_file(args: argparse.Namespace) -> int:
    file_format = args.format or _format_of(args.file)
    request_id = args.request_id or f"import-{new_ulid()}"
    try:
        handle = args.file.open(newline="", encoding="utf-8-sig")  # a BOM is skipped
    except OSError as err:
        raise ObolCliError(f"cannot read {args.file}: {err.strerror}") from None
    with handle:
        return asyncio.run(_import(args, handle, file_format, request_id))


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ObolCliError(f"cannot tell the format of {path}: pass --format csv or --format jsonl")


async def _import(
    args: argparse.Namespace, handle: IO[str], file_format: str, request_id: str
) -> int:
    reader = _csv_reader(handle) if file_format == "csv" else None
    mode = " (dry run)" if args.dry_run else ""
    _note(f"importing {args.file} into {args.target}{mode}, request id {request_id}")
    local: list[BadRow] = []
    async with create_channel(
        args.target, api_key=args.api_key, deadline_seconds=args.timeout
    ) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        if reader is None:
            rows = _jsonl_rows(handle, local)
        else:
            rows = _csv_rows(reader, _Decimals(stub), local)
        options = wallet_pb2.ImportCustomersOptions(
            request_id=request_id, dry_run=args.dry_run, create_only=args.create_only
        )
        outgoing = _Outgoing(options, rows)
        try:
            response = await stub.ImportCustomers(outgoing.requests(), timeout=args.timeout)
        except grpc.aio.AioRpcError as err:
            raise _failed(err) from None
        except asyncio.CancelledError:
            # gRPC cancels the call when the request stream raises: report why.
            if outgoing.failure is None:
                raise
            raise outgoing.failure from None
    bad = local + [
        BadRow(e.line_number, _field(e.field, file_format), e.message) for e in response.errors
    ]
    _print_summary(response, len(local), bad)
    return 1 if bad else 0


class _Outgoing:
    """The request stream; a failure while reading the file ends the call and is kept."""

    def __init__(
        self,
        options: wallet_pb2.ImportCustomersOptions,
        rows: AsyncIterator[wallet_pb2.ImportCustomerRow],
    ) -> None:
        self._options = options
        self._rows = rows
        self.failure: ObolCliError | None = None

    async def requests(self) -> AsyncIterator[wallet_pb2.ImportCustomersRequest]:
        yield wallet_pb2.ImportCustomersRequest(options=self._options)
        sent = 0
        try:
            async for row in self._rows:
                yield wallet_pb2.ImportCustomersRequest(row=row)
                sent += 1
                if sent % PROGRESS_EVERY == 0:
                    _note(f"{sent} rows sent")
        except grpc.aio.AioRpcError as err:
            self.failure = _failed(err)
            raise
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            self.failure = ObolCliError(f"cannot read the file after {sent} rows: {err}")
            raise
        _note(f"{sent} rows sent, waiting for the summary")


def _failed(err: grpc.aio.AioRpcError) -> ObolCliError:
    return ObolCliError(f"the import failed: {err.code().name}: {err.details()}")


def _print_summary(
    response: wallet_pb2.ImportCustomersResponse, refused_here: int, bad: list[BadRow]
) -> None:
    would = "would be " if response.dry_run else ""
    print(
        f"rows: {response.rows_received + refused_here} read, "
        f"{response.rows_failed + refused_here} bad\n"
        f"customers {would}created: {response.customers_created}, "
        f"updated: {response.customers_updated}, unchanged: {response.customers_unchanged}\n"
        f"wallets {would}created: {response.wallets_created}\n"
        f"grants {would}created: {response.grants_created}"
    )
    if response.dry_run:
        print("dry run: nothing was written")
    for row in sorted(bad, key=lambda row: row.line_number):
        print(f"line {row.line_number}: {row.field}: {row.message}")


def _note(message: str) -> None:
    print(f"obol: import: {message}", file=sys.stderr, flush=True)


def _field(path: str, file_format: str) -> str:
    """The CSV column of a field path (CSV rows have one wallet and one grant)."""
    if file_format == "csv":
        for prefix, column in _CSV_FIELDS:
            if path == prefix or path.startswith((f"{prefix}.", f"{prefix}[")):
                return column
    return path or "row"


# ---- JSONL ----


async def _jsonl_rows(
    handle: IO[str], bad: list[BadRow]
) -> AsyncIterator[wallet_pb2.ImportCustomerRow]:
    for line_number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            row = json_format.Parse(text, wallet_pb2.ImportCustomerRow())
        except json_format.ParseError as err:
            bad.append(BadRow(line_number, "row", str(err)))
            continue
        row.line_number = line_number
        yield row


# ---- CSV ----


class _Decimals:
    """Each asset's decimals, asked of the wallet service once per asset."""

    def __init__(self, stub: wallet_pb2_grpc.WalletServiceAsyncStub) -> None:
        self._stub = stub
        self._known: dict[str, int | None] = {}

    async def of(self, asset_code: str) -> int:
        if asset_code not in self._known:
            try:
                reply = await self._stub.GetAsset(wallet_pb2.GetAssetRequest(asset_code=asset_code))
                self._known[asset_code] = reply.asset.decimals
            except grpc.aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    raise
                self._known[asset_code] = None
        decimals = self._known[asset_code]
        if decimals is None:
            raise _Refused("asset_code", f"no asset {asset_code!r}")
        return decimals


def _csv_reader(handle: IO[str]) -> csv.DictReader[str]:
    """A reader past the header, which must name known columns, external_id among them."""
    reader = csv.DictReader(handle)
    try:
        header = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as err:
        raise ObolCliError(f"cannot read the CSV header: {err}") from None
    unknown = [name for name in header if name not in COLUMNS]
    if unknown or "external_id" not in header:
        problem = f"unknown columns {unknown}" if unknown else "no external_id column"
        raise ObolCliError(f"bad CSV header: {problem}; the columns are {', '.join(COLUMNS)}")
    return reader


async def _csv_rows(
    reader: csv.DictReader[str], decimals: _Decimals, bad: list[BadRow]
) -> AsyncIterator[wallet_pb2.ImportCustomerRow]:
    for line_number, values in _numbered(reader):
        try:
            yield await _csv_row(line_number, values, decimals)
        except _Refused as refused:
            bad.append(BadRow(line_number, refused.field, refused.message))


def _numbered(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str | None, str]]]:
    """Each record with the line it starts on (a quoted value may span lines)."""
    start = reader.line_num + 1
    for values in reader:
        yield start, values
        start = reader.line_num + 1


async def _csv_row(
    line_number: int, raw: Mapping[str | None, str], decimals: _Decimals
) -> wallet_pb2.ImportCustomerRow:
    if None in raw:
        raise _Refused("row", "has more values than the header has columns")
    values = {name: (raw.get(name) or "").strip() for name in COLUMNS}
    row = wallet_pb2.ImportCustomerRow(
        line_number=line_number,
        customer=wallet_pb2.Customer(
            external_id=values["external_id"],
            display_name=values["display_name"],
            email=values["email"],
            plan_id=values["plan_id"],
            metadata=_metadata(values["metadata"]),
        ),
    )
    asset = values["asset_code"]
    if not asset:
        for column in COLUMNS[COLUMNS.index("overdraft_limit") :]:
            if values[column]:
                raise _Refused("asset_code", f"is required with {column}")
        return row
    places = await decimals.of(asset)
    wallet = row.wallets.add(asset_code=asset)
    if values["overdraft_limit"]:
        limit = _amount(values["overdraft_limit"], places, "overdraft_limit")
        wallet.overdraft_limit.CopyFrom(money_pb2.Money(asset_code=asset, amount=limit))
    balance = _amount(values["opening_balance"] or "0", places, "opening_balance")
    if balance:
        grant = wallet.grants.add(
            amount=money_pb2.Money(asset_code=asset, amount=balance),
            kind=_grant_kind(values["grant_kind"]),
            external_id=values["grant_external_id"] or DEFAULT_GRANT_ID,
        )
        if values["expire_time"]:
            grant.expire_time.FromDatetime(_time(values["expire_time"]))
    return row


def _metadata(text: str) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _Refused("metadata", 'must be a JSON object of strings, e.g. {"tier": "gold"}')
    return value


def _amount(text: str, places: int, column: str) -> int:
    try:
        return parse_amount(text, places)
    except ValueError as err:
        raise _Refused(column, str(err)) from None


def _grant_kind(text: str) -> wallet_pb2.GrantKind.ValueType:
    kind = _GRANT_KINDS.get(text.lower() or "adjustment")
    if kind is None:
        raise _Refused("grant_kind", f"must be one of {', '.join(_GRANT_KINDS)}")
    return kind


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _Refused(
            "expire_time", f"{text!r} is not an ISO-8601 time such as 2027-01-31T00:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)

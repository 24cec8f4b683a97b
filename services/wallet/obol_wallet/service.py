"""The gRPC edge of the wallet service: map requests to the domain and back.

Requests arrive here already validated against their protovalidate rules (the edge
interceptor does it), and every WalletError is mapped to a rich status in that same
interceptor, so handlers only translate and delegate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC
from functools import partial
from typing import Any, TypeVar

import asyncpg
from google.protobuf.message import Message
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from obol_core.errors import InvalidArgument, ObolError, dependency_failure, to_rpc_status
from obol_core.grpc_server import Context
from obol_core.idempotency import request_fingerprint, run_once
from obol_core.money import Money
from obol_core.pagination import decode_page_token, page_size, split_page
from obol_core.postgres import Queryable
from obol_core.streams import raw_requests
from obol_core.validation import validate_request

from . import assets, customers, ledger_queries, wallet_events, wallets
from .balance_watch import watch_balances
from .convert import (
    asset_from_proto,
    asset_to_proto,
    customer_to_proto,
    entry_kinds_from_proto,
    event_kinds_from_proto,
    grant_kind_from_proto,
    grant_to_proto,
    hold_states_from_proto,
    hold_to_proto,
    money,
    ms_to_timestamp,
    new_customer_from_proto,
    selector_from_proto,
    timestamp_to_ms,
    timestamp_to_ms_ceil,
    top_up_rule_to_proto,
    transaction_to_proto,
    wallet_event_to_proto,
    wallet_to_proto,
)
from .core import (
    AuthorizeItem,
    CaptureItem,
    ChargeItem,
    DebitItem,
    ExtendHoldItem,
    GrantSpec,
    WalletCore,
)
from .errors import NoPriceBook, ResourceNotFound, UnknownWallet
from .importer_convert import import_customers
from .model import (
    DEFAULT_PRIORITY,
    NEVER_EXPIRES,
    AuthorizeResult,
    Balance,
    CaptureResult,
    CostRecord,
    DebitResult,
    GrantKind,
    Idempotency,
    StopReason,
)
from .partitions import wallet_of_grant
from .top_up_rules import TopUpRules, rule_spec
from .transaction_watch import decode_cursor, encode_cursor, watch_transactions
from .wallets import WalletRecord

ResultT = TypeVar("ResultT")
GrantResponseT = TypeVar(
    "GrantResponseT",
    wallet_pb2.CreateGrantResponse,
    wallet_pb2.TopUpResponse,
    wallet_pb2.RefundGrantResponse,
)

SERVICE_NAME = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name

_STOP_REASONS = {
    StopReason.HOLD_EXHAUSTED: wallet_pb2.STOP_REASON_HOLD_EXHAUSTED,
    StopReason.WALLET_EXHAUSTED: wallet_pb2.STOP_REASON_WALLET_EXHAUSTED,
    StopReason.WALLET_FROZEN: wallet_pb2.STOP_REASON_WALLET_FROZEN,
}


def _idem(method: str, request: Message) -> Idempotency:
    """The request's idempotency key, bound to a hash of the whole request."""
    request_id: str = getattr(request, "request_id")  # noqa: B009 - every mutation has one
    return Idempotency(request_id, request_fingerprint(method, request).hex())


def _amount(
    message: wallet_pb2.AuthorizeRequest
    | wallet_pb2.CaptureRequest
    | wallet_pb2.ChargeRequest
    | wallet_pb2.StreamDebit,
) -> Money:
    """The fixed amount of a billable oneof; usage needs a price book (pricing issue)."""
    if message.WhichOneof("billable") == "amount":
        return Money(message.amount.asset_code, message.amount.amount)
    raise NoPriceBook(
        "pricing usage needs a published price book, and none applies yet: send `amount`",
        metadata={"field": "billable"},
    )


def _cost(
    message: wallet_pb2.CaptureRequest | wallet_pb2.ChargeRequest | wallet_pb2.StreamDebit,
) -> CostRecord | None:
    if message.WhichOneof("cost") == "provider_cost":
        return CostRecord(message.provider_cost.asset_code, message.provider_cost.amount)
    return None


def _settlement(
    record: WalletRecord, charged: int, cost: CostRecord | None
) -> wallet_pb2.Settlement:
    """Charged in the wallet's asset; revenue in money (custom units at their exchange
    rate, rounded once by the asset's rule); margin when cost is in the same currency."""
    revenue = record.revenue(charged)
    settlement = wallet_pb2.Settlement(
        charged=money(record.asset_code, charged),
        revenue=money(revenue.asset_code, revenue.amount),
        cost_source=wallet_pb2.COST_SOURCE_PROVIDER_REPORTED
        if cost
        else wallet_pb2.COST_SOURCE_UNRATED,
    )
    if cost is not None:
        settlement.cost.CopyFrom(money(cost.currency, cost.amount))
        if cost.currency == revenue.asset_code:
            settlement.margin.CopyFrom(money(revenue.asset_code, revenue.amount - cost.amount))
    return settlement


def _authorize_item(request: wallet_pb2.AuthorizeRequest) -> AuthorizeItem:
    amount = _amount(request)
    return AuthorizeItem(
        idem=_idem("Authorize", request),
        selector=selector_from_proto(request.wallet),
        asset_code=amount.asset_code,
        amount=amount.amount,
        ttl_ms=request.ttl.ToMilliseconds() if request.HasField("ttl") else None,
        memo=dict(request.metadata),
    )


def _authorize_response(
    record: WalletRecord, result: AuthorizeResult
) -> wallet_pb2.AuthorizeResponse:
    return wallet_pb2.AuthorizeResponse(
        hold_id=result.hold_id,
        held=money(record.asset_code, result.held),
        available=money(record.asset_code, result.balance.available),
        expire_time=ms_to_timestamp(result.expires_ms),
        wallet_id=record.wallet_id,
        balance_version=result.balance.version,
    )


def _capture_item(request: wallet_pb2.CaptureRequest) -> CaptureItem:
    amount = _amount(request)
    return CaptureItem(
        idem=_idem("Capture", request),
        hold_id=request.hold_id,
        asset_code=amount.asset_code,
        amount=amount.amount,
        allow_overcapture=request.allow_overcapture,
        cost=_cost(request),
        memo=dict(request.metadata),
    )


def _capture_response(
    record: WalletRecord, result: CaptureResult, cost: CostRecord | None
) -> wallet_pb2.CaptureResponse:
    asset = record.asset_code
    return wallet_pb2.CaptureResponse(
        hold_id=result.hold_id,
        transaction_id=result.entry_ids[-1] if result.entry_ids else "",
        settlement=_settlement(record, result.charged, cost),
        released=money(asset, result.released),
        available=money(asset, result.balance.available),
        balance_version=result.balance.version,
        auto_top_up_triggered=result.auto_top_up_triggered,
    )


def _charge_item(request: wallet_pb2.ChargeRequest) -> ChargeItem:
    amount = _amount(request)
    return ChargeItem(
        idem=_idem("Charge", request),
        selector=selector_from_proto(request.wallet),
        asset_code=amount.asset_code,
        amount=amount.amount,
        cost=_cost(request),
        memo=dict(request.metadata),
    )


def _charge_response(
    record: WalletRecord, result: CaptureResult, cost: CostRecord | None
) -> wallet_pb2.ChargeResponse:
    return wallet_pb2.ChargeResponse(
        transaction_id=result.entry_ids[-1] if result.entry_ids else "",
        settlement=_settlement(record, result.charged, cost),
        available=money(record.asset_code, result.balance.available),
        wallet_id=record.wallet_id,
        balance_version=result.balance.version,
        auto_top_up_triggered=result.auto_top_up_triggered,
    )


def _debit_item(request: wallet_pb2.StreamDebit) -> DebitItem:
    amount = _amount(request)
    return DebitItem(
        idem=_idem("StreamDebit", request),
        hold_id=request.hold_id,
        asset_code=amount.asset_code,
        amount=amount.amount,
        cost=_cost(request),
    )


def _debit_result(
    record: WalletRecord, result: DebitResult, cost: CostRecord | None
) -> wallet_pb2.StreamDebitResult:
    asset = record.asset_code
    settlement = _settlement(record, result.charged, cost)
    settlement.shortfall.CopyFrom(money(asset, result.shortfall))
    stop = result.stop_reason
    return wallet_pb2.StreamDebitResult(
        hold_id=result.hold_id,
        transaction_id=result.entry_ids[-1] if result.entry_ids else "",
        settlement=settlement,
        hold_remaining=money(asset, result.hold_remaining),
        hold_debited=money(asset, result.hold_debited),
        available=money(asset, result.balance.available),
        signal=wallet_pb2.METER_SIGNAL_CONTINUE if stop is None else wallet_pb2.METER_SIGNAL_STOP,
        stop_reason=wallet_pb2.STOP_REASON_UNSPECIFIED if stop is None else _STOP_REASONS[stop],
        expire_time=ms_to_timestamp(result.expires_ms),
    )


def _extend_hold_item(request: wallet_pb2.ExtendHoldRequest) -> ExtendHoldItem:
    return ExtendHoldItem(
        idem=_idem("ExtendHold", request),
        hold_id=request.hold_id,
        ttl_ms=request.ttl.ToMilliseconds(),
        increase_by=request.increase_by.amount,
        asset_code=request.increase_by.asset_code,
    )


def _add_result(
    results: Any,
    record: WalletRecord | None,
    outcome: ResultT | ObolError,
    respond: Callable[[WalletRecord, ResultT], Message],
) -> None:
    """One batch item's result: the response, or the error as a google.rpc.Status."""
    if isinstance(outcome, ObolError):
        results.add(error=to_rpc_status(outcome))
    else:
        assert record is not None  # an item that reached the backend was resolved
        results.add(response=respond(record, outcome))


class WalletService(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], core: WalletCore) -> None:
        self._pool = pool
        self._core = core
        self._top_ups = TopUpRules(pool, core.backend, core.clock)

    async def _wallet_message(
        self, record: WalletRecord, balance: Balance | None = None
    ) -> wallet_pb2.Wallet:
        now = self._core.clock.now_ms()
        if balance is None:
            balance = await self._core.backend.balance(record.wallet_id, now)
        grants = await self._core.backend.grants(record.wallet_id, now)
        return wallet_to_proto(record, balance, grants)

    async def CreateCustomer(
        self, request: wallet_pb2.CreateCustomerRequest, context: Context
    ) -> wallet_pb2.CreateCustomerResponse:
        async def create(conn: Queryable) -> wallet_pb2.CreateCustomerResponse:
            created = await customers.create_customer(
                conn, new_customer_from_proto(request.customer)
            )
            return wallet_pb2.CreateCustomerResponse(customer=customer_to_proto(created))

        return await run_once(
            self._pool,
            request_id=request.request_id,
            method="CreateCustomer",
            request=request,
            response_type=wallet_pb2.CreateCustomerResponse,
            mutation=create,
        )

    async def GetCustomer(
        self, request: wallet_pb2.GetCustomerRequest, context: Context
    ) -> wallet_pb2.GetCustomerResponse:
        if request.WhichOneof("customer") == "external_id":
            found = await customers.get_customer_by_external_id(self._pool, request.external_id)
        else:
            found = await customers.get_customer(self._pool, request.customer_id)
        return wallet_pb2.GetCustomerResponse(customer=customer_to_proto(found))

    async def ListCustomers(
        self, request: wallet_pb2.ListCustomersRequest, context: Context
    ) -> wallet_pb2.ListCustomersResponse:
        limit = page_size(request.page_size)
        rows = await customers.list_customers(
            self._pool,
            limit=limit + 1,
            after=decode_page_token(request.page_token),
            plan_id=request.plan_id,
        )
        page, next_token = split_page(rows, limit, lambda row: row.customer_id)
        return wallet_pb2.ListCustomersResponse(
            customers=[customer_to_proto(row) for row in page], next_page_token=next_token
        )

    async def UpdateCustomer(
        self, request: wallet_pb2.UpdateCustomerRequest, context: Context
    ) -> wallet_pb2.UpdateCustomerResponse:
        etag = request.customer.etag

        async def update(conn: Queryable) -> wallet_pb2.UpdateCustomerResponse:
            if etag and not etag.isdigit():
                raise InvalidArgument.for_field("customer.etag", "is not an etag this API issued")
            updated = await customers.update_customer(
                conn,
                request.customer.customer_id,
                new_customer_from_proto(request.customer),
                frozenset(request.update_mask.paths),
                expected_version=int(etag) if etag else None,
            )
            return wallet_pb2.UpdateCustomerResponse(customer=customer_to_proto(updated))

        return await run_once(
            self._pool,
            request_id=request.request_id,
            method="UpdateCustomer",
            request=request,
            response_type=wallet_pb2.UpdateCustomerResponse,
            mutation=update,
        )

    async def ImportCustomers(
        self, request_iterator: object, context: Context
    ) -> wallet_pb2.ImportCustomersResponse:
        # Rows are read raw and validated one by one inside the importer, so that a bad row
        # is reported by its line number instead of failing the whole stream.
        return await import_customers(self._core, self._pool, raw_requests(context))

    # ---- assets ----

    async def CreateAsset(
        self, request: wallet_pb2.CreateAssetRequest, context: Context
    ) -> wallet_pb2.CreateAssetResponse:
        async def create(conn: Queryable) -> wallet_pb2.CreateAssetResponse:
            created = await assets.create_asset(conn, asset_from_proto(request.asset))
            return wallet_pb2.CreateAssetResponse(asset=asset_to_proto(created))

        return await run_once(
            self._pool,
            request_id=request.request_id,
            method="CreateAsset",
            request=request,
            response_type=wallet_pb2.CreateAssetResponse,
            mutation=create,
        )

    async def GetAsset(
        self, request: wallet_pb2.GetAssetRequest, context: Context
    ) -> wallet_pb2.GetAssetResponse:
        found = await assets.get_asset(self._pool, request.asset_code)
        return wallet_pb2.GetAssetResponse(asset=asset_to_proto(found))

    async def ListAssets(
        self, request: wallet_pb2.ListAssetsRequest, context: Context
    ) -> wallet_pb2.ListAssetsResponse:
        limit = page_size(request.page_size)
        rows = await assets.list_assets(
            self._pool, limit=limit + 1, after=decode_page_token(request.page_token)
        )
        page, next_token = split_page(rows, limit, lambda row: row.asset_code)
        return wallet_pb2.ListAssetsResponse(
            assets=[asset_to_proto(row) for row in page], next_page_token=next_token
        )

    # ---- wallets ----

    async def CreateWallet(
        self, request: wallet_pb2.CreateWalletRequest, context: Context
    ) -> wallet_pb2.CreateWalletResponse:
        async def create(conn: Queryable) -> wallet_pb2.CreateWalletResponse:
            await assets.get_asset(conn, request.asset_code)
            limit = request.overdraft_limit
            if limit.asset_code not in ("", request.asset_code):
                raise InvalidArgument.for_field(
                    "overdraft_limit.asset_code", f"must be the wallet's asset {request.asset_code}"
                )
            record = await self._core.insert_wallet(
                conn, request.customer_id, request.asset_code, limit.amount
            )
            return wallet_pb2.CreateWalletResponse(
                wallet=wallet_pb2.Wallet(wallet_id=record.wallet_id)
            )

        created = await run_once(
            self._pool,
            request_id=request.request_id,
            method="CreateWallet",
            request=request,
            response_type=wallet_pb2.CreateWalletResponse,
            mutation=create,
        )
        # After the commit (the Postgres backend reads the row from another connection);
        # a replay opens it again, which leaves an open wallet as it is.
        record = await self._core.open_wallet(
            created.wallet.wallet_id, request.overdraft_limit.amount
        )
        return wallet_pb2.CreateWalletResponse(wallet=await self._wallet_message(record))

    async def GetWallet(
        self, request: wallet_pb2.GetWalletRequest, context: Context
    ) -> wallet_pb2.GetWalletResponse:
        view = await self._core.view(selector_from_proto(request.wallet))
        return wallet_pb2.GetWalletResponse(
            wallet=wallet_to_proto(view.record, view.balance, view.grants)
        )

    async def ListWallets(
        self, request: wallet_pb2.ListWalletsRequest, context: Context
    ) -> wallet_pb2.ListWalletsResponse:
        limit = page_size(request.page_size)
        rows = await wallets.list_wallets(
            self._pool,
            limit=limit + 1,
            after=decode_page_token(request.page_token),
            customer_id=request.customer_id,
            asset_code=request.asset_code,
        )
        page, next_token = split_page(rows, limit, lambda row: row.wallet_id)
        messages = [await self._wallet_message(row) for row in page]
        if request.frozen_only:
            messages = [m for m in messages if m.frozen]
        return wallet_pb2.ListWalletsResponse(wallets=messages, next_page_token=next_token)

    async def FreezeWallet(
        self, request: wallet_pb2.FreezeWalletRequest, context: Context
    ) -> wallet_pb2.FreezeWalletResponse:
        record, result = await self._core.update_settings(
            _idem("FreezeWallet", request), request.wallet_id, frozen=True
        )
        return wallet_pb2.FreezeWalletResponse(
            wallet=await self._wallet_message(record, result.balance)
        )

    async def UnfreezeWallet(
        self, request: wallet_pb2.UnfreezeWalletRequest, context: Context
    ) -> wallet_pb2.UnfreezeWalletResponse:
        record, result = await self._core.update_settings(
            _idem("UnfreezeWallet", request), request.wallet_id, frozen=False
        )
        return wallet_pb2.UnfreezeWalletResponse(
            wallet=await self._wallet_message(record, result.balance)
        )

    async def UpdateWallet(
        self, request: wallet_pb2.UpdateWalletRequest, context: Context
    ) -> wallet_pb2.UpdateWalletResponse:
        record, result = await self._core.update_settings(
            _idem("UpdateWallet", request),
            request.wallet.wallet_id,
            overdraft_limit=request.wallet.overdraft_limit.amount,
        )
        return wallet_pb2.UpdateWalletResponse(
            wallet=await self._wallet_message(record, result.balance)
        )

    # ---- grants ----

    async def CreateGrant(
        self, request: wallet_pb2.CreateGrantRequest, context: Context
    ) -> wallet_pb2.CreateGrantResponse:
        spec = GrantSpec(
            kind=grant_kind_from_proto(request.kind),
            amount=request.amount.amount,
            priority=request.priority if request.HasField("priority") else DEFAULT_PRIORITY,
            effective_ms=timestamp_to_ms(request.effective_time)
            if request.HasField("effective_time")
            else None,
            expires_ms=timestamp_to_ms(request.expire_time)
            if request.HasField("expire_time")
            else NEVER_EXPIRES,
            memo={
                "external_id": request.external_id,
                "description": request.description,
                "subscription_id": request.subscription_id,
                "rollover_from_grant_id": request.rollover_from_grant_id,
            },
        )
        record, result = await self._core.grant(
            _idem("CreateGrant", request),
            selector_from_proto(request.wallet),
            request.amount.asset_code,
            spec,
        )
        return await self._grant_response(
            record, result.grant_id, result.balance, wallet_pb2.CreateGrantResponse
        )

    async def TopUp(
        self, request: wallet_pb2.TopUpRequest, context: Context
    ) -> wallet_pb2.TopUpResponse:
        spec = GrantSpec(
            kind=GrantKind.PURCHASED,
            amount=request.amount.amount,
            priority=request.priority if request.HasField("priority") else DEFAULT_PRIORITY,
            expires_ms=timestamp_to_ms(request.expire_time)
            if request.HasField("expire_time")
            else NEVER_EXPIRES,
            memo={
                "payment_reference": request.payment_reference,
                "description": request.description,
            },
        )
        record, result = await self._core.grant(
            _idem("TopUp", request),
            selector_from_proto(request.wallet),
            request.amount.asset_code,
            spec,
        )
        response = await self._grant_response(
            record, result.grant_id, result.balance, wallet_pb2.TopUpResponse
        )
        response.transaction_id = result.entry_ids[-1] if result.entry_ids else ""
        return response

    async def _grant_response(
        self,
        record: WalletRecord,
        grant_id: str,
        balance: Balance,
        response_type: type[GrantResponseT],
    ) -> GrantResponseT:
        now = self._core.clock.now_ms()
        grants = await self._core.backend.grants(record.wallet_id, now)
        response = response_type(wallet=wallet_to_proto(record, balance, grants))
        for grant in grants:
            if grant.grant_id == grant_id:
                response.grant.CopyFrom(
                    grant_to_proto(grant, record.customer_id, record.asset_code, now)
                )
        return response

    async def ListGrants(
        self, request: wallet_pb2.ListGrantsRequest, context: Context
    ) -> wallet_pb2.ListGrantsResponse:
        view = await self._core.view(selector_from_proto(request.wallet))
        now = view.balance.as_of_ms
        messages = [
            grant_to_proto(g, view.record.customer_id, view.record.asset_code, now)
            for g in view.grants
        ]
        if request.states:
            messages = [m for m in messages if m.state in request.states]
        if request.kinds:
            messages = [m for m in messages if m.kind in request.kinds]
        limit = page_size(request.page_size)
        after = decode_page_token(request.page_token)
        if after is not None:
            ids = [m.grant_id for m in messages]
            messages = messages[ids.index(after) + 1 :] if after in ids else []
        page, next_token = split_page(messages, limit, lambda m: m.grant_id)
        return wallet_pb2.ListGrantsResponse(grants=page, next_page_token=next_token)

    async def GetGrant(
        self, request: wallet_pb2.GetGrantRequest, context: Context
    ) -> wallet_pb2.GetGrantResponse:
        """Live grants from the backend; exhausted and expired ones from the ledger store."""
        wallet_id = wallet_of_grant(request.grant_id)
        not_found = ResourceNotFound(
            f"no grant {request.grant_id!r}",
            metadata={"resource_type": "grant", "grant_id": request.grant_id},
        )
        if wallet_id is None:
            raise not_found
        try:
            record = await self._core.directory.get(wallet_id)
        except UnknownWallet:
            raise not_found from None
        now = self._core.clock.now_ms()
        live = await self._core.backend.grants(wallet_id, now)
        found = next((g for g in live if g.grant_id == request.grant_id), None)
        if found is None:
            found = await ledger_queries.get_grant(self._pool, request.grant_id)
        if found is None:
            raise not_found
        return wallet_pb2.GetGrantResponse(
            grant=grant_to_proto(found, record.customer_id, record.asset_code, now)
        )

    async def RefundGrant(
        self, request: wallet_pb2.RefundGrantRequest, context: Context
    ) -> wallet_pb2.RefundGrantResponse:
        result = await self._core.refund(
            _idem("RefundGrant", request),
            request.grant_id,
            request.amount.asset_code,
            request.amount.amount,
        )
        record = await self._core.directory.get(result.balance.wallet_id)
        response = await self._grant_response(
            record, request.grant_id, result.balance, wallet_pb2.RefundGrantResponse
        )
        response.refunded.CopyFrom(money(record.asset_code, request.amount.amount))
        response.transaction_id = result.entry_ids[-1] if result.entry_ids else ""
        return response

    # ---- holds ----

    async def Authorize(
        self, request: wallet_pb2.AuthorizeRequest, context: Context
    ) -> wallet_pb2.AuthorizeResponse:
        record, result = await self._core.authorize(_authorize_item(request))
        return _authorize_response(record, result)

    async def Capture(
        self, request: wallet_pb2.CaptureRequest, context: Context
    ) -> wallet_pb2.CaptureResponse:
        item = _capture_item(request)
        record, result = await self._core.capture(item)
        return _capture_response(record, result, item.cost)

    async def Void(
        self, request: wallet_pb2.VoidRequest, context: Context
    ) -> wallet_pb2.VoidResponse:
        return await self._void(request)

    async def _void(self, request: wallet_pb2.VoidRequest) -> wallet_pb2.VoidResponse:
        result = await self._core.void(_idem("Void", request), request.hold_id)
        asset = result.balance.asset_code
        return wallet_pb2.VoidResponse(
            hold_id=request.hold_id,
            released=money(asset, result.released),
            available=money(asset, result.balance.available),
            transaction_id=result.entry_ids[-1] if result.entry_ids else "",
            balance_version=result.balance.version,
        )

    async def ExtendHold(
        self, request: wallet_pb2.ExtendHoldRequest, context: Context
    ) -> wallet_pb2.ExtendHoldResponse:
        return await self._extend_hold(request)

    async def _extend_hold(
        self, request: wallet_pb2.ExtendHoldRequest
    ) -> wallet_pb2.ExtendHoldResponse:
        record, result = await self._core.extend_hold(_extend_hold_item(request))
        return wallet_pb2.ExtendHoldResponse(
            hold=hold_to_proto(result.hold, record),
            available=money(record.asset_code, result.balance.available),
        )

    async def Charge(
        self, request: wallet_pb2.ChargeRequest, context: Context
    ) -> wallet_pb2.ChargeResponse:
        item = _charge_item(request)
        record, result = await self._core.charge(item)
        return _charge_response(record, result, item.cost)

    # ---- batches: a malformed batch is refused whole by validation; domain errors are
    # per item, as google.rpc.Status in that item's result ----

    async def BatchAuthorize(
        self, request: wallet_pb2.BatchAuthorizeRequest, context: Context
    ) -> wallet_pb2.BatchAuthorizeResponse:
        items = [_authorize_item(item) for item in request.items]
        response = wallet_pb2.BatchAuthorizeResponse()
        for record, outcome in await self._core.authorize_batch(items):
            _add_result(response.results, record, outcome, _authorize_response)
        return response

    async def BatchCapture(
        self, request: wallet_pb2.BatchCaptureRequest, context: Context
    ) -> wallet_pb2.BatchCaptureResponse:
        items = [_capture_item(item) for item in request.items]
        response = wallet_pb2.BatchCaptureResponse()
        outcomes = await self._core.capture_batch(items)
        for item, (record, outcome) in zip(items, outcomes, strict=True):
            respond = partial(_capture_response, cost=item.cost)
            _add_result(response.results, record, outcome, respond)
        return response

    async def BatchVoid(
        self, request: wallet_pb2.BatchVoidRequest, context: Context
    ) -> wallet_pb2.BatchVoidResponse:
        response = wallet_pb2.BatchVoidResponse()
        for item in request.items:
            try:
                response.results.add(response=await self._void(item))
            except ObolError as err:
                response.results.add(error=to_rpc_status(err))
        return response

    async def BatchCharge(
        self, request: wallet_pb2.BatchChargeRequest, context: Context
    ) -> wallet_pb2.BatchChargeResponse:
        items = [_charge_item(item) for item in request.items]
        response = wallet_pb2.BatchChargeResponse()
        outcomes = await self._core.charge_batch(items)
        for item, (record, outcome) in zip(items, outcomes, strict=True):
            _add_result(
                response.results, record, outcome, partial(_charge_response, cost=item.cost)
            )
        return response

    async def WatchBalance(
        self, request: wallet_pb2.WatchBalanceRequest, context: Context
    ) -> AsyncIterator[wallet_pb2.WatchBalanceResponse]:
        async for view in watch_balances(
            self._core, wallet_ids=list(request.wallet_ids), customer_id=request.customer_id
        ):
            yield wallet_pb2.WatchBalanceResponse(
                wallet=wallet_to_proto(view.record, view.balance, view.grants)
            )

    # ---- the Meter stream ----

    async def Meter(
        self, request_iterator: object, context: Context
    ) -> AsyncIterator[wallet_pb2.MeterResponse]:
        # Each message is validated and answered on its own: a bad or refused action gets an
        # error result under its sequence and the stream goes on; so does one that met Redis
        # or Postgres down (UNAVAILABLE, retryable), so a high-volume caller keeps its stream
        # through an outage. Actions run in the order sent, so actions on one hold apply in
        # order.
        async for message in raw_requests(context):
            yield await self._meter_one(message)

    async def _meter_one(self, message: wallet_pb2.MeterRequest) -> wallet_pb2.MeterResponse:
        response = wallet_pb2.MeterResponse(sequence=message.sequence)
        try:
            validate_request(message)
            action = message.WhichOneof("action")
            if action == "authorize":
                record, authorized = await self._core.authorize(_authorize_item(message.authorize))
                response.authorize.CopyFrom(_authorize_response(record, authorized))
            elif action == "debit":
                debit = _debit_item(message.debit)
                record, debited = await self._core.debit(debit)
                response.debit.CopyFrom(_debit_result(record, debited, debit.cost))
            elif action == "capture":
                item = _capture_item(message.capture)
                record, captured = await self._core.capture(item)
                response.capture.CopyFrom(_capture_response(record, captured, item.cost))
            elif action == "charge":
                charge = _charge_item(message.charge)
                record, charged = await self._core.charge(charge)
                response.charge.CopyFrom(_charge_response(record, charged, charge.cost))
            elif action == "void_hold":
                response.void_hold.CopyFrom(await self._void(message.void_hold))
            else:  # extend_hold: validation requires one of the actions
                response.extend_hold.CopyFrom(await self._extend_hold(message.extend_hold))
        except ObolError as err:
            response.error.CopyFrom(to_rpc_status(err))
        except Exception as err:
            if (outage := dependency_failure(err)) is None:
                raise
            response.error.CopyFrom(to_rpc_status(outage))
        return response

    # ---- ledger (Postgres, the system of record; the Redis backend's entries appear once
    # the write-behind has written them) ----

    async def ListTransactions(
        self, request: wallet_pb2.ListTransactionsRequest, context: Context
    ) -> wallet_pb2.ListTransactionsResponse:
        where = ledger_queries.TransactionFilter(
            wallet_id=request.wallet_id,
            customer_id=request.customer_id,
            kinds=entry_kinds_from_proto(request.kinds),
            hold_id=request.hold_id,
            start_ms=timestamp_to_ms(request.time_range.start_time)
            if request.time_range.HasField("start_time")
            else None,
            end_ms=timestamp_to_ms(request.time_range.end_time)
            if request.time_range.HasField("end_time")
            else None,
        )
        limit = page_size(request.page_size)
        rows = await ledger_queries.list_transactions(
            self._pool,
            where,
            limit=limit + 1,
            after=decode_page_token(request.page_token),
            with_lines=request.view == wallet_pb2.TRANSACTION_VIEW_FULL,
        )
        page, next_token = split_page(rows, limit, ledger_queries.page_key)
        return wallet_pb2.ListTransactionsResponse(
            transactions=[transaction_to_proto(row) for row in page], next_page_token=next_token
        )

    async def WatchTransactions(
        self, request: wallet_pb2.WatchTransactionsRequest, context: Context
    ) -> AsyncIterator[wallet_pb2.WatchTransactionsResponse]:
        start = request.WhichOneof("start")
        since = None
        if start == "after_cursor":
            since = decode_cursor(request.after_cursor)
        elif start == "start_time":
            since = request.start_time.ToDatetime(tzinfo=UTC)
        async for transaction in watch_transactions(
            self._pool,
            since=since,
            kinds=entry_kinds_from_proto(request.kinds),
            customer_id=request.customer_id,
            with_lines=request.view != wallet_pb2.TRANSACTION_VIEW_BASIC,
        ):
            yield wallet_pb2.WatchTransactionsResponse(
                transaction=transaction_to_proto(transaction),
                cursor=encode_cursor(transaction.recorded_at),
            )

    async def GetTransaction(
        self, request: wallet_pb2.GetTransactionRequest, context: Context
    ) -> wallet_pb2.GetTransactionResponse:
        found = await ledger_queries.get_transaction(self._pool, request.transaction_id)
        return wallet_pb2.GetTransactionResponse(transaction=transaction_to_proto(found))

    async def VerifyLedger(
        self, request: wallet_pb2.VerifyLedgerRequest, context: Context
    ) -> wallet_pb2.VerifyLedgerResponse:
        record = await self._core.directory.get(request.wallet_id)
        checked = await ledger_queries.verify_chain(
            self._pool, record.wallet_id, from_seq=request.from_sequence
        )
        ledger = await ledger_queries.wallet_balances(self._pool, record.wallet_id)
        live = await self._core.backend.balance(record.wallet_id, self._core.clock.now_ms())
        asset = record.asset_code
        ledger_balance = ledger.total
        live_balance = live.active + live.overdraft_used
        return wallet_pb2.VerifyLedgerResponse(
            valid=checked.valid,
            entries_checked=checked.entries_checked,
            head_sequence=checked.head_seq,
            head_hash=checked.head_hash,
            first_invalid_sequence=checked.first_invalid_seq,
            first_invalid_transaction_id=checked.first_invalid_entry_id,
            problem=checked.problem,
            ledger_balance=money(asset, ledger_balance),
            live_balance=money(asset, live_balance),
            live_held=money(asset, live.held),
            balance_matches=ledger_balance == live_balance,
        )

    async def ListHolds(
        self, request: wallet_pb2.ListHoldsRequest, context: Context
    ) -> wallet_pb2.ListHoldsResponse:
        """From the ledger store: on the Redis backend a hold shows up here once the
        write-behind has written it (GetHold is live)."""
        record = await self._core.resolve(selector_from_proto(request.wallet))
        limit = page_size(request.page_size)
        rows = await ledger_queries.list_holds(
            self._pool,
            record.wallet_id,
            states=hold_states_from_proto(request.states),
            limit=limit + 1,
            after=decode_page_token(request.page_token),
        )
        page, next_token = split_page(rows, limit, lambda hold: hold.hold_id)
        return wallet_pb2.ListHoldsResponse(
            holds=[hold_to_proto(hold, record) for hold in page], next_page_token=next_token
        )

    async def GetHold(
        self, request: wallet_pb2.GetHoldRequest, context: Context
    ) -> wallet_pb2.GetHoldResponse:
        hold = await self._core.hold(request.hold_id)
        record = await self._core.directory.get(hold.wallet_id)
        return wallet_pb2.GetHoldResponse(hold=hold_to_proto(hold, record))

    # ---- auto top-up rules (Postgres; the backend's hot state follows each change) ----

    async def SetAutoTopUpRule(
        self, request: wallet_pb2.SetAutoTopUpRuleRequest, context: Context
    ) -> wallet_pb2.SetAutoTopUpRuleResponse:
        record = await self._core.directory.get(request.wallet_id)
        top_up = request.WhichOneof("top_up")
        spec = rule_spec(
            record,
            threshold=Money(request.threshold.asset_code, request.threshold.amount),
            amount=Money(request.amount.asset_code, request.amount.amount)
            if top_up == "amount"
            else None,
            top_up_to=Money(request.top_up_to.asset_code, request.top_up_to.amount)
            if top_up == "top_up_to"
            else None,
            payment_method_id=request.payment_method_id,
            max_failures=request.max_failures,
            enabled=request.enabled,
        )

        async def put(conn: Queryable) -> wallet_pb2.SetAutoTopUpRuleResponse:
            view = await self._top_ups.put(conn, record, spec)
            return wallet_pb2.SetAutoTopUpRuleResponse(rule=top_up_rule_to_proto(view))

        response = await run_once(
            self._pool,
            request_id=request.request_id,
            method="SetAutoTopUpRule",
            request=request,
            response_type=wallet_pb2.SetAutoTopUpRuleResponse,
            mutation=put,
        )
        await self._top_ups.mirror(record.wallet_id)  # after the commit, and on a replay
        return response

    async def GetAutoTopUpRule(
        self, request: wallet_pb2.GetAutoTopUpRuleRequest, context: Context
    ) -> wallet_pb2.GetAutoTopUpRuleResponse:
        record = await self._core.directory.get(request.wallet_id)
        view = await self._top_ups.get(record)
        return wallet_pb2.GetAutoTopUpRuleResponse(rule=top_up_rule_to_proto(view))

    async def DeleteAutoTopUpRule(
        self, request: wallet_pb2.DeleteAutoTopUpRuleRequest, context: Context
    ) -> wallet_pb2.DeleteAutoTopUpRuleResponse:
        record = await self._core.directory.get(request.wallet_id)

        async def delete(conn: Queryable) -> wallet_pb2.DeleteAutoTopUpRuleResponse:
            await self._top_ups.delete(conn, record.wallet_id)
            return wallet_pb2.DeleteAutoTopUpRuleResponse()

        response = await run_once(
            self._pool,
            request_id=request.request_id,
            method="DeleteAutoTopUpRule",
            request=request,
            response_type=wallet_pb2.DeleteAutoTopUpRuleResponse,
            mutation=delete,
        )
        await self._top_ups.mirror(record.wallet_id)  # after the commit, and on a replay
        return response

    # ---- wallet events (Postgres on both backends; on Redis an event appears once the
    # auto top-up worker has recorded it from the partition's stream) ----

    async def ListWalletEvents(
        self, request: wallet_pb2.ListWalletEventsRequest, context: Context
    ) -> wallet_pb2.ListWalletEventsResponse:
        record = await self._core.resolve(selector_from_proto(request.wallet))
        time_range = request.time_range
        where = wallet_events.EventFilter(
            wallet_id=record.wallet_id,
            kinds=event_kinds_from_proto(request.kinds),
            start_ms=timestamp_to_ms_ceil(time_range.start_time)
            if time_range.HasField("start_time")
            else None,
            end_ms=timestamp_to_ms_ceil(time_range.end_time)
            if time_range.HasField("end_time")
            else None,
        )
        limit = page_size(request.page_size)
        rows = await wallet_events.list_events(
            self._pool, where, limit=limit + 1, after=decode_page_token(request.page_token)
        )
        page, next_token = split_page(rows, limit, wallet_events.page_key)
        return wallet_pb2.ListWalletEventsResponse(
            events=[wallet_event_to_proto(event) for event in page], next_page_token=next_token
        )

"""Conversion between protobuf messages and wallet domain types: only at the service edge."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2

from obol_core.money import RoundingMode
from obol_core.unit_price import UnitPrice

from .assets import Asset, AssetKind
from .customers import Customer, NewCustomer
from .ledger_queries import Transaction
from .model import (
    NEVER_EXPIRES,
    Balance,
    EntryKind,
    Grant,
    GrantKind,
    GrantState,
    Hold,
    HoldState,
    TopUpDisabledReason,
    WalletEvent,
    WalletEventKind,
)
from .top_up_rules import RuleView
from .wallets import WalletRecord, WalletSelector


def _timestamp(value: object) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)  # type: ignore[arg-type]
    return stamp


def new_customer_from_proto(message: wallet_pb2.Customer) -> NewCustomer:
    return NewCustomer(
        external_id=message.external_id,
        display_name=message.display_name,
        email=message.email,
        plan_id=message.plan_id,
        metadata=dict(message.metadata),
    )


def customer_to_proto(customer: Customer) -> wallet_pb2.Customer:
    return wallet_pb2.Customer(
        customer_id=customer.customer_id,
        external_id=customer.external_id,
        display_name=customer.display_name,
        email=customer.email,
        plan_id=customer.plan_id,
        metadata=dict(customer.metadata),
        create_time=_timestamp(customer.created_at),
        update_time=_timestamp(customer.updated_at),
        etag=str(customer.version),
    )


# ---- time ----


def ms_to_timestamp(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def timestamp_to_ms(stamp: Timestamp) -> int:
    return stamp.ToMilliseconds()


def timestamp_to_ms_ceil(stamp: Timestamp) -> int:
    """The first whole millisecond at or after `stamp`, so that for a whole ms `t`,
    `t >= stamp` iff `t >= bound` and `t < stamp` iff `t < bound` (sub-ms time bounds)."""
    return stamp.ToMilliseconds() + (1 if stamp.nanos % 1_000_000 else 0)


def ms_to_duration(ms: int) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(ms)
    return duration


def money(asset_code: str, amount: int) -> money_pb2.Money:
    return money_pb2.Money(asset_code=asset_code, amount=amount)


# ---- selectors and enums ----


def selector_from_proto(message: wallet_pb2.WalletSelector) -> WalletSelector:
    return WalletSelector(
        wallet_id=message.wallet_id,
        customer_id=message.customer_id,
        external_customer_id=message.external_customer_id,
        asset_code=message.asset_code,
    )


_GRANT_KINDS = {
    GrantKind.PURCHASED: wallet_pb2.GRANT_KIND_PURCHASED,
    GrantKind.INCLUDED: wallet_pb2.GRANT_KIND_INCLUDED,
    GrantKind.PROMOTIONAL: wallet_pb2.GRANT_KIND_PROMOTIONAL,
    GrantKind.ROLLOVER: wallet_pb2.GRANT_KIND_ROLLOVER,
    GrantKind.ADJUSTMENT: wallet_pb2.GRANT_KIND_ADJUSTMENT,
}
_GRANT_KINDS_FROM_PROTO = {v: k for k, v in _GRANT_KINDS.items()}
_GRANT_STATES = {
    GrantState.PENDING: wallet_pb2.GRANT_STATE_PENDING,
    GrantState.ACTIVE: wallet_pb2.GRANT_STATE_ACTIVE,
    GrantState.EXHAUSTED: wallet_pb2.GRANT_STATE_EXHAUSTED,
    GrantState.EXPIRED: wallet_pb2.GRANT_STATE_EXPIRED,
}
_HOLD_STATES = {
    HoldState.OPEN: wallet_pb2.HOLD_STATE_OPEN,
    HoldState.CAPTURED: wallet_pb2.HOLD_STATE_CAPTURED,
    HoldState.VOIDED: wallet_pb2.HOLD_STATE_VOIDED,
    HoldState.EXPIRED: wallet_pb2.HOLD_STATE_EXPIRED,
}


def hold_states_from_proto(states: Sequence[wallet_pb2.HoldState.ValueType]) -> list[HoldState]:
    by_proto = {v: k for k, v in _HOLD_STATES.items()}
    return [by_proto[state] for state in states]


def grant_kind_from_proto(kind: wallet_pb2.GrantKind.ValueType) -> GrantKind:
    return _GRANT_KINDS_FROM_PROTO[kind]


# ---- assets ----

_ASSET_KINDS = {
    AssetKind.CURRENCY: wallet_pb2.ASSET_KIND_CURRENCY,
    AssetKind.CUSTOM_UNIT: wallet_pb2.ASSET_KIND_CUSTOM_UNIT,
}
_ROUNDING = {
    RoundingMode.HALF_UP: money_pb2.ROUNDING_MODE_HALF_UP,
    RoundingMode.HALF_EVEN: money_pb2.ROUNDING_MODE_HALF_EVEN,
    RoundingMode.UP: money_pb2.ROUNDING_MODE_UP,
    RoundingMode.DOWN: money_pb2.ROUNDING_MODE_DOWN,
}


def asset_from_proto(message: wallet_pb2.Asset) -> Asset:
    rate = None
    if message.HasField("exchange_rate"):
        rate = UnitPrice(
            message.exchange_rate.amount.asset_code,
            message.exchange_rate.amount.amount,
            message.exchange_rate.per_quantity or 1,
        )
    rounding = {v: k for k, v in _ROUNDING.items()}.get(message.exchange_rounding_mode)
    return Asset(
        asset_code=message.asset_code,
        kind={v: k for k, v in _ASSET_KINDS.items()}[message.kind],
        display_name=message.display_name,
        decimals=message.decimals,
        display_decimals=message.display_decimals,
        symbol=message.symbol,
        exchange_rate=rate,
        exchange_rounding=rounding,
    )


def asset_to_proto(asset: Asset) -> wallet_pb2.Asset:
    message = wallet_pb2.Asset(
        asset_code=asset.asset_code,
        kind=_ASSET_KINDS[asset.kind],
        display_name=asset.display_name,
        decimals=asset.decimals,
        display_decimals=asset.display_decimals,
        symbol=asset.symbol,
    )
    if asset.exchange_rate is not None:
        rate = asset.exchange_rate
        message.exchange_rate.amount.CopyFrom(money(rate.asset_code, rate.amount))
        message.exchange_rate.per_quantity = rate.per_quantity
    if asset.exchange_rounding is not None:
        message.exchange_rounding_mode = _ROUNDING[asset.exchange_rounding]
    if asset.created_at is not None:
        message.create_time.FromDatetime(asset.created_at)
    return message


# ---- wallets, grants, holds ----


def grant_to_proto(
    grant: Grant, customer_id: str, asset_code: str, now_ms: int
) -> wallet_pb2.Grant:
    message = wallet_pb2.Grant(
        grant_id=grant.grant_id,
        wallet_id=grant.wallet_id,
        customer_id=customer_id,
        kind=_GRANT_KINDS[grant.kind],
        priority=grant.priority,
        amount=money(asset_code, grant.amount),
        remaining=money(asset_code, grant.remaining),
        state=_GRANT_STATES[grant.state(now_ms)],
        effective_time=ms_to_timestamp(grant.effective_ms),
        refunded=money(asset_code, grant.refunded),
        create_time=ms_to_timestamp(grant.created_ms),
    )
    if grant.expires_ms != NEVER_EXPIRES:
        message.expire_time.CopyFrom(ms_to_timestamp(grant.expires_ms))
    return message


def wallet_to_proto(
    record: WalletRecord, balance: Balance, grants: Sequence[Grant]
) -> wallet_pb2.Wallet:
    asset = record.asset_code
    message = wallet_pb2.Wallet(
        wallet_id=record.wallet_id,
        customer_id=record.customer_id,
        asset_code=asset,
        balance=money(asset, balance.active + balance.overdraft_used),
        held=money(asset, balance.held),
        overdraft_limit=money(asset, balance.overdraft_limit),
        available=money(asset, balance.available),
        frozen=balance.frozen,
        balance_version=balance.version,
    )
    message.create_time.FromDatetime(record.created_at)
    now = balance.as_of_ms
    expiring: list[Grant] = []
    for grant in grants:
        state = grant.state(now)
        if state in (GrantState.ACTIVE, GrantState.PENDING):
            entry = message.grants.add(
                grant_id=grant.grant_id,
                kind=_GRANT_KINDS[grant.kind],
                priority=grant.priority,
                remaining=money(asset, grant.remaining),
                state=_GRANT_STATES[state],
                effective_time=ms_to_timestamp(grant.effective_ms),
            )
            if grant.expires_ms != NEVER_EXPIRES:
                entry.expire_time.CopyFrom(ms_to_timestamp(grant.expires_ms))
                if state is GrantState.ACTIVE and grant.remaining > 0:
                    expiring.append(grant)
    if expiring:
        first = min(g.expires_ms for g in expiring)
        message.next_expire_time.CopyFrom(ms_to_timestamp(first))
        amount = sum(g.remaining for g in expiring if g.expires_ms == first)
        message.next_expire_amount.CopyFrom(money(asset, amount))
    return message


def hold_to_proto(hold: Hold, record: WalletRecord) -> wallet_pb2.Hold:
    asset = record.asset_code
    held = hold.authorized - hold.debited if hold.state is HoldState.OPEN else 0
    return wallet_pb2.Hold(
        hold_id=hold.hold_id,
        wallet_id=hold.wallet_id,
        customer_id=record.customer_id,
        state=_HOLD_STATES[hold.state],
        authorized=money(asset, hold.authorized),
        held=money(asset, held),
        debited=money(asset, hold.debited),
        captured=money(asset, hold.captured),
        ttl=ms_to_duration(hold.ttl_ms),
        create_time=ms_to_timestamp(hold.created_ms),
        expire_time=ms_to_timestamp(hold.expires_ms),
    )


# ---- ledger ----

_ENTRY_KINDS = {
    EntryKind.TOP_UP: wallet_pb2.TRANSACTION_KIND_TOP_UP,
    EntryKind.GRANT: wallet_pb2.TRANSACTION_KIND_GRANT,
    EntryKind.HOLD: wallet_pb2.TRANSACTION_KIND_HOLD,
    EntryKind.RELEASE: wallet_pb2.TRANSACTION_KIND_RELEASE,
    EntryKind.CAPTURE: wallet_pb2.TRANSACTION_KIND_CAPTURE,
    EntryKind.CHARGE: wallet_pb2.TRANSACTION_KIND_CHARGE,
    EntryKind.DEBIT: wallet_pb2.TRANSACTION_KIND_DEBIT,
    EntryKind.EXPIRY: wallet_pb2.TRANSACTION_KIND_EXPIRY,
    EntryKind.REFUND: wallet_pb2.TRANSACTION_KIND_REFUND,
    EntryKind.REVERSAL: wallet_pb2.TRANSACTION_KIND_REVERSAL,
    EntryKind.ADJUSTMENT: wallet_pb2.TRANSACTION_KIND_ADJUSTMENT,
}
_ENTRY_KINDS_FROM_PROTO = {v: k for k, v in _ENTRY_KINDS.items()}


def entry_kinds_from_proto(
    kinds: Sequence[wallet_pb2.TransactionKind.ValueType],
) -> list[EntryKind]:
    return [_ENTRY_KINDS_FROM_PROTO[kind] for kind in kinds]


def transaction_to_proto(transaction: Transaction) -> wallet_pb2.Transaction:
    entry = transaction.entry
    wallet_prefix = f"wallet:{entry.wallet_id}:"
    message = wallet_pb2.Transaction(
        transaction_id=entry.entry_id,
        kind=_ENTRY_KINDS[entry.kind],
        wallet_id=entry.wallet_id,
        customer_id=transaction.customer_id,
        asset_code=transaction.asset_code,
        request_id=entry.request_id,
        sequence=entry.seq,
        hash=transaction.hash,
        previous_hash=transaction.prev_hash,
        event_time=ms_to_timestamp(entry.occurred_ms),
        hold_id=entry.memo.get("hold_id", ""),
        grant_id=entry.memo.get("grant_id", ""),
        description=entry.memo.get("description", ""),
        metadata=dict(entry.memo),
    )
    message.create_time.FromDatetime(transaction.recorded_at)
    delta = 0
    for line in entry.lines:
        grant_id = ""
        if line.account.startswith(wallet_prefix + "grant:"):
            grant_id = line.account.removeprefix(wallet_prefix + "grant:")
        if line.account.startswith(wallet_prefix):
            delta += line.amount
        message.lines.add(
            account=line.account, amount=money(line.asset_code, line.amount), grant_id=grant_id
        )
    message.balance_delta.CopyFrom(money(transaction.asset_code, delta))
    return message


# ---- auto top-up ----

_DISABLED_REASONS = {
    TopUpDisabledReason.NONE: wallet_pb2.AUTO_TOP_UP_DISABLED_REASON_UNSPECIFIED,
    TopUpDisabledReason.OPERATOR: wallet_pb2.AUTO_TOP_UP_DISABLED_REASON_OPERATOR,
    TopUpDisabledReason.TOO_MANY_FAILURES: wallet_pb2.AUTO_TOP_UP_DISABLED_REASON_TOO_MANY_FAILURES,
    TopUpDisabledReason.PAYMENT_METHOD_INVALID: (
        wallet_pb2.AUTO_TOP_UP_DISABLED_REASON_PAYMENT_METHOD_INVALID
    ),
}
_OUTCOMES = {
    "": wallet_pb2.AUTO_TOP_UP_OUTCOME_UNSPECIFIED,
    "pending": wallet_pb2.AUTO_TOP_UP_OUTCOME_IN_PROGRESS,
    "succeeded": wallet_pb2.AUTO_TOP_UP_OUTCOME_SUCCEEDED,
    "failed": wallet_pb2.AUTO_TOP_UP_OUTCOME_FAILED,
}


def top_up_rule_to_proto(view: RuleView) -> wallet_pb2.AutoTopUpRule:
    rule, history, asset = view.rule, view.history, view.asset_code
    message = wallet_pb2.AutoTopUpRule(
        wallet_id=rule.wallet_id,
        threshold=money(asset, rule.threshold),
        payment_method_id=rule.payment_method_id,
        max_failures=rule.max_failures,
        enabled=rule.enabled,
        disabled_reason=_DISABLED_REASONS[rule.disabled_reason],
        disabled_message=rule.disabled_message,
        status=wallet_pb2.AutoTopUpStatus(
            consecutive_failures=rule.consecutive_failures,
            last_outcome=_OUTCOMES[history.last_state],
            last_error=history.last_error,
            last_grant_id=history.last_grant_id,
        ),
        create_time=ms_to_timestamp(rule.created_ms),
        update_time=ms_to_timestamp(rule.updated_ms),
    )
    if rule.amount:
        message.amount.CopyFrom(money(asset, rule.amount))
    else:
        message.top_up_to.CopyFrom(money(asset, rule.top_up_to))
    if history.last_attempt_ms:
        message.status.last_attempt_time.CopyFrom(ms_to_timestamp(history.last_attempt_ms))
    if rule.consecutive_failures and rule.next_attempt_ms:  # a retry after a failure
        message.status.next_attempt_time.CopyFrom(ms_to_timestamp(rule.next_attempt_ms))
    return message


# ---- wallet events ----

_EVENT_KINDS = {
    WalletEventKind.LOW_BALANCE: wallet_pb2.WALLET_EVENT_KIND_LOW_BALANCE,
    WalletEventKind.DEPLETED: wallet_pb2.WALLET_EVENT_KIND_DEPLETED,
    WalletEventKind.AUTO_TOP_UP_SUCCEEDED: wallet_pb2.WALLET_EVENT_KIND_AUTO_TOP_UP_SUCCEEDED,
    WalletEventKind.AUTO_TOP_UP_FAILED: wallet_pb2.WALLET_EVENT_KIND_AUTO_TOP_UP_FAILED,
    WalletEventKind.AUTO_TOP_UP_DISABLED: wallet_pb2.WALLET_EVENT_KIND_AUTO_TOP_UP_DISABLED,
}
_EVENT_KINDS_FROM_PROTO = {v: k for k, v in _EVENT_KINDS.items()}


def event_kinds_from_proto(
    kinds: Sequence[wallet_pb2.WalletEventKind.ValueType],
) -> list[WalletEventKind]:
    return [_EVENT_KINDS_FROM_PROTO[kind] for kind in kinds]


def wallet_event_to_proto(event: WalletEvent) -> wallet_pb2.WalletEvent:
    return wallet_pb2.WalletEvent(
        event_id=event.event_id,
        wallet_id=event.wallet_id,
        kind=_EVENT_KINDS[event.kind],
        occur_time=ms_to_timestamp(event.occurred_ms),
        data=dict(event.data),
    )

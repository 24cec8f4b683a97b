"""Wallet domain types shared by the backends and the service edge.

Amounts are ints in the asset's atomic units; times are epoch milliseconds (ints) so that
Lua, Python and SQL agree exactly. Requests carry `now_ms` from the service's clock, which
tests control.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class GrantKind(enum.Enum):
    PURCHASED = "purchased"
    INCLUDED = "included"
    PROMOTIONAL = "promotional"
    ROLLOVER = "rollover"
    ADJUSTMENT = "adjustment"


class GrantState(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    EXHAUSTED = "exhausted"
    EXPIRED = "expired"


class HoldState(enum.Enum):
    OPEN = "open"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


class EntryKind(enum.Enum):
    TOP_UP = "top_up"
    GRANT = "grant"
    HOLD = "hold"
    RELEASE = "release"
    CAPTURE = "capture"
    CHARGE = "charge"
    DEBIT = "debit"
    EXPIRY = "expiry"
    REFUND = "refund"
    REVERSAL = "reversal"
    ADJUSTMENT = "adjustment"


NEVER_EXPIRES = 0  # expires_ms value for "no expiry"
DEFAULT_PRIORITY = 100


@dataclass(frozen=True)
class LedgerLine:
    account: str
    asset_code: str
    amount: int  # signed; an entry's lines sum to zero per asset


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str
    wallet_id: str
    seq: int  # per-wallet sequence, 1, 2, 3...
    kind: EntryKind
    request_id: str
    occurred_ms: int
    lines: Sequence[LedgerLine]
    memo: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Grant:
    grant_id: str
    wallet_id: str
    kind: GrantKind
    amount: int
    remaining: int
    priority: int
    effective_ms: int
    expires_ms: int  # NEVER_EXPIRES for none
    created_ms: int
    refunded: int = 0

    def state(self, now_ms: int) -> GrantState:
        if self.expires_ms != NEVER_EXPIRES and self.expires_ms <= now_ms:
            return GrantState.EXPIRED
        if self.effective_ms > now_ms:
            return GrantState.PENDING
        return GrantState.ACTIVE if self.remaining > 0 else GrantState.EXHAUSTED


@dataclass(frozen=True)
class Hold:
    hold_id: str
    wallet_id: str
    state: HoldState
    authorized: int
    debited: int
    captured: int
    expires_ms: int
    created_ms: int
    ttl_ms: int  # each stream debit pushes expires_ms to at least now + ttl_ms


@dataclass(frozen=True)
class Balance:
    """A wallet's hot state after settling time (expiries applied) at `as_of_ms`."""

    wallet_id: str
    asset_code: str
    active: int  # sum of active grants' remaining
    overdraft_used: int  # <= 0
    held: int  # sum of open holds' remaining reservation
    overdraft_limit: int
    frozen: bool
    version: int
    as_of_ms: int

    @property
    def available(self) -> int:
        return self.active + self.overdraft_used - self.held + self.overdraft_limit


# ---- requests (what the service asks a backend to do) ----


@dataclass(frozen=True)
class Idempotency:
    request_id: str
    request_hash: str  # sha256 hex of method + request content


@dataclass(frozen=True)
class GrantRequest:
    idem: Idempotency
    wallet_id: str
    grant_id: str
    entry_id: str
    kind: GrantKind
    amount: int
    priority: int
    effective_ms: int
    expires_ms: int
    now_ms: int
    memo: Mapping[str, str] = field(default_factory=dict)
    # The auto top-up attempt this grant pays out ('' for none): the same atomic step
    # clears it as the wallet's pending attempt and resets the rule's failures.
    top_up_attempt: str = ""


@dataclass(frozen=True)
class RefundRequest:
    idem: Idempotency
    wallet_id: str
    grant_id: str
    entry_id: str
    amount: int
    now_ms: int
    memo: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthorizeRequest:
    idem: Idempotency
    wallet_id: str
    hold_id: str
    entry_id: str
    amount: int
    ttl_ms: int
    now_ms: int
    memo: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CostRecord:
    """Provider cost recorded beside a capture (in the cost currency, may differ)."""

    currency: str
    amount: int


@dataclass(frozen=True)
class CaptureRequest:
    idem: Idempotency
    wallet_id: str
    hold_id: str
    entry_id: str
    amount: int  # the total for the whole hold (may be 0), stream debits included
    allow_overcapture: bool
    now_ms: int
    cost: CostRecord | None = None
    memo: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DebitRequest:
    """One chunk of a streaming generation, drawn from an open hold at once."""

    idem: Idempotency
    wallet_id: str
    hold_id: str
    entry_id: str
    amount: int  # the chunk (> 0), not cumulative
    now_ms: int
    cost: CostRecord | None = None
    memo: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtendHoldRequest:
    """Push an open hold's expiry to at least now + ttl_ms (which becomes its TTL) and
    reserve `increase_by` more (0: nothing more)."""

    idem: Idempotency
    wallet_id: str
    hold_id: str
    entry_id: str
    ttl_ms: int
    increase_by: int
    now_ms: int


@dataclass(frozen=True)
class VoidRequest:
    idem: Idempotency
    wallet_id: str
    hold_id: str
    entry_id: str
    now_ms: int


@dataclass(frozen=True)
class ChargeRequest:
    idem: Idempotency
    wallet_id: str
    entry_id: str
    amount: int
    now_ms: int
    cost: CostRecord | None = None
    memo: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SettingsRequest:
    """Freeze/unfreeze and overdraft limit; None leaves a setting as it is."""

    idem: Idempotency
    wallet_id: str
    entry_id: str
    now_ms: int
    frozen: bool | None = None
    overdraft_limit: int | None = None


# ---- results ----


@dataclass(frozen=True)
class Draw:
    grant_id: str
    amount: int


@dataclass(frozen=True)
class MutationResult:
    """What every mutation returns; `replayed` is True when the request_id had already run."""

    entry_ids: Sequence[str]
    balance: Balance
    replayed: bool = False
    # A spend whose atomic step started an auto top-up attempt (see docs/wallet.md).
    auto_top_up_triggered: bool = False


@dataclass(frozen=True)
class VoidResult(MutationResult):
    released: int = 0  # the reservation the void gave back


@dataclass(frozen=True)
class AuthorizeResult(MutationResult):
    hold_id: str = ""
    held: int = 0
    expires_ms: int = 0


@dataclass(frozen=True)
class CaptureResult(MutationResult):
    hold_id: str = ""
    charged: int = 0  # the total for the hold (stream debits included)
    released: int = 0
    draws: Sequence[Draw] = ()  # what this call drew (a capture: beyond the debits)
    overdraft_drawn: int = 0
    reversed: int = 0  # debited beyond a lower capture total, given back to the wallet


class StopReason(enum.Enum):
    """Why a streaming debit tells the caller to stop."""

    HOLD_EXHAUSTED = "hold_exhausted"
    WALLET_EXHAUSTED = "wallet_exhausted"
    WALLET_FROZEN = "wallet_frozen"


@dataclass(frozen=True)
class DebitResult(MutationResult):
    hold_id: str = ""
    charged: int = 0  # drawn for this chunk: from the hold, then from the free balance
    shortfall: int = 0  # what the chunk asked beyond what could be drawn (not charged)
    hold_remaining: int = 0  # what the hold still reserves
    hold_debited: int = 0  # drawn from the hold's reservation by its debits so far
    expires_ms: int = 0  # the hold's expiry after this debit
    draws: Sequence[Draw] = ()
    overdraft_drawn: int = 0

    @property
    def stop_reason(self) -> StopReason | None:
        """None: go on. A frozen wallet stops every stream, then a shortfall, then a hold
        with nothing left."""
        if self.balance.frozen:
            return StopReason.WALLET_FROZEN
        if self.shortfall > 0:
            return StopReason.WALLET_EXHAUSTED
        if self.hold_remaining == 0:
            return StopReason.HOLD_EXHAUSTED
        return None


@dataclass(frozen=True)
class ExtendHoldResult(MutationResult):
    """The open hold after the extension."""

    hold_id: str = ""
    authorized: int = 0
    debited: int = 0
    expires_ms: int = 0
    created_ms: int = 0
    ttl_ms: int = 0

    @property
    def hold(self) -> Hold:
        return Hold(
            hold_id=self.hold_id,
            wallet_id=self.balance.wallet_id,
            state=HoldState.OPEN,
            authorized=self.authorized,
            debited=self.debited,
            captured=0,
            expires_ms=self.expires_ms,
            created_ms=self.created_ms,
            ttl_ms=self.ttl_ms,
        )


@dataclass(frozen=True)
class GrantResult(MutationResult):
    grant_id: str = ""


@dataclass(frozen=True)
class RequestRecord:
    """A stored idempotency record: the first result of a request_id on a wallet."""

    request_id: str
    request_hash: str
    result: str  # the backend's encoded result
    created_ms: int


@dataclass(frozen=True)
class WalletSnapshot:
    """Everything needed to rebuild a wallet's hot state (Redis) from Postgres."""

    wallet_id: str
    asset_code: str
    overdraft_limit: int
    overdraft_used: int
    frozen: bool
    seq: int
    version: int
    grants: Sequence[Grant]  # every grant not expired and with remaining > 0, or pending
    open_holds: Sequence[Hold]
    requests: Sequence[RequestRecord]  # idempotency records younger than the retention


# ---- auto top-up (docs/wallet.md "Auto top-up") ----

DEFAULT_MAX_FAILURES = 3


class TopUpDisabledReason(enum.Enum):
    NONE = ""
    OPERATOR = "operator"
    TOO_MANY_FAILURES = "too_many_failures"
    PAYMENT_METHOD_INVALID = "payment_method_invalid"


@dataclass(frozen=True)
class TopUpRule:
    """A wallet's auto top-up rule and its live status (an `auto_topup_rules` row)."""

    wallet_id: str
    threshold: int  # an attempt starts when available falls below this
    amount: int  # bought per attempt; 0 when top_up_to is set
    top_up_to: int  # buy what brings available up to this; 0 when amount is set
    payment_method_id: str
    max_failures: int
    enabled: bool
    disabled_reason: TopUpDisabledReason
    disabled_message: str
    consecutive_failures: int
    next_attempt_ms: int  # no attempt before this (0: none scheduled)
    deleted: bool
    version: int  # grows with every Set and Delete
    created_ms: int
    updated_ms: int


@dataclass(frozen=True)
class TopUpAttempt:
    """An auto top-up attempt in flight: `<wallet>:<seq>`, seq being the wallet's ledger
    sequence of the entry that started it. It is the payment's idempotency key and the
    grant's request_id, so running it twice charges and credits once."""

    attempt_id: str
    wallet_id: str
    asset_code: str
    amount: int
    payment_method_id: str
    created_ms: int
    token: str = ""  # where the backend's queue keeps it (Redis: partition/message id)


class WalletEventKind(enum.Enum):
    LOW_BALANCE = "low_balance"  # a spend took available below the rule's threshold
    DEPLETED = "depleted"  # a spend took available to zero
    AUTO_TOP_UP_SUCCEEDED = "auto_top_up_succeeded"
    AUTO_TOP_UP_FAILED = "auto_top_up_failed"
    AUTO_TOP_UP_DISABLED = "auto_top_up_disabled"  # the alert: the rule turned itself off


@dataclass(frozen=True)
class WalletEvent:
    """A typed wallet event (`wallet_events`); event_id is derived from its cause."""

    event_id: str
    wallet_id: str
    kind: WalletEventKind
    occurred_ms: int
    data: Mapping[str, str] = field(default_factory=dict)
    token: str = ""  # where the backend's queue keeps it (Redis: partition/message id)


@dataclass(frozen=True)
class TopUpFailure:
    """A declined payment of an attempt, to record on the rule."""

    attempt: TopUpAttempt
    error: str
    method_invalid: bool  # the payment method cannot work: disable the rule at once
    now_ms: int
    retry_base_ms: int  # the first retry's delay; doubled per further failure
    retry_max_ms: int


@dataclass(frozen=True)
class TopUpStatus:
    """A rule's live status after a failure was recorded."""

    recorded: bool  # False: the attempt was no longer pending (a repeat): nothing changed
    consecutive_failures: int
    next_attempt_ms: int
    enabled: bool
    disabled_reason: TopUpDisabledReason
    rule_version: int  # the version the status belongs to (0: the wallet has no rule)


def retry_delay_ms(failures: int, base_ms: int, max_ms: int) -> int:
    """Exponential backoff: base, 2 x base, 4 x base... capped at max (top_up.lua too)."""
    delay = base_ms
    for _ in range(1, failures):
        delay = min(2 * delay, max_ms)
    return min(delay, max_ms)

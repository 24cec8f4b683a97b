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
    amount: int  # the total to charge for the hold (may be 0)
    allow_overcapture: bool
    now_ms: int
    cost: CostRecord | None = None
    memo: Mapping[str, str] = field(default_factory=dict)


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


@dataclass(frozen=True)
class AuthorizeResult(MutationResult):
    hold_id: str = ""
    held: int = 0
    expires_ms: int = 0


@dataclass(frozen=True)
class CaptureResult(MutationResult):
    hold_id: str = ""
    charged: int = 0
    released: int = 0
    draws: Sequence[Draw] = ()
    overdraft_drawn: int = 0


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

"""The WalletBackend protocol: every check-and-change of money, as one atomic step.

Two implementations are held to the same tests: `RedisBackend` (one Lua call per
mutation, ledger written behind through a stream) and `PostgresBackend` (one transaction
per mutation; the baseline the benchmark compares against).

Every mutation is idempotent on `idem.request_id`, checked in the same atomic step as the
change: a repeat with the same `request_hash` returns the first result with
`replayed=True` and changes nothing; a different hash raises IdempotencyKeyReused.
Errors are the WalletError subclasses in errors.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from obol_core.errors import ObolError

from .model import (
    AuthorizeRequest,
    AuthorizeResult,
    Balance,
    CaptureRequest,
    CaptureResult,
    ChargeRequest,
    DebitRequest,
    DebitResult,
    ExtendHoldRequest,
    ExtendHoldResult,
    Grant,
    GrantRequest,
    GrantResult,
    Hold,
    MutationResult,
    RefundRequest,
    SettingsRequest,
    TopUpAttempt,
    TopUpFailure,
    TopUpRule,
    TopUpStatus,
    VoidRequest,
    VoidResult,
    WalletEvent,
)


class WalletBackend(Protocol):
    async def open_wallet(
        self, wallet_id: str, asset_code: str, overdraft_limit: int, now_ms: int
    ) -> None:
        """Create the wallet's hot state (empty, hydrated). Idempotent."""

    async def grant(self, request: GrantRequest) -> GrantResult:
        """Add a grant (top-up, promotional, included, rollover, adjustment)."""

    async def refund(self, request: RefundRequest) -> MutationResult:
        """Take back up to a purchased grant's remaining (RefundExceedsRemaining)."""

    async def authorize(self, request: AuthorizeRequest) -> AuthorizeResult:
        """Reserve `amount` if available (InsufficientFunds, WalletFrozen)."""

    async def capture(self, request: CaptureRequest) -> CaptureResult:
        """Settle a hold at its total: what debits drew counts toward it; draw the rest in
        grant order and release the remaining reservation, or reverse the debits' excess."""

    async def void(self, request: VoidRequest) -> VoidResult:
        """Release an open hold's remaining reservation (debits stay charged)."""

    async def debit(self, request: DebitRequest) -> DebitResult:
        """Draw a chunk from an open hold at once (an overrun only from the free balance,
        the rest is the shortfall) and push the hold's expiry to now + its TTL."""

    async def extend_hold(self, request: ExtendHoldRequest) -> ExtendHoldResult:
        """Push an open hold's expiry out and reserve more (InsufficientFunds,
        WalletFrozen for an increase)."""

    async def charge(self, request: ChargeRequest) -> CaptureResult:
        """Authorize and capture in one step."""

    async def update_settings(self, request: SettingsRequest) -> MutationResult:
        """Freeze/unfreeze, overdraft limit."""

    async def balance(self, wallet_id: str, now_ms: int) -> Balance:
        """Current balance after settling time (lazy expiry)."""

    async def grants(self, wallet_id: str, now_ms: int) -> Sequence[Grant]:
        """Every grant of the wallet, in drawdown order (active first)."""

    async def hold(self, wallet_id: str, hold_id: str, now_ms: int) -> Hold:
        """One hold (UnknownHold)."""

    async def sweep(self, now_ms: int, limit: int) -> int:
        """Settle time for up to `limit` wallets with something due; returns how many."""

    # ---- auto top-up (docs/wallet.md "Auto top-up"); the spends start attempts and
    # record balance alerts themselves, in their atomic step ----

    async def mirror_top_up_rule(self, rule: TopUpRule) -> None:
        """Make the wallet's hot state follow its stored rule (Set/Delete, after the
        commit); ignored unless `rule.version` is newer than the one there."""

    async def take_top_ups(
        self, consumer: str, now_ms: int, limit: int, lease_ms: int
    ) -> Sequence[TopUpAttempt | WalletEvent]:
        """Work for the top-up worker `consumer`: attempts to run (each held for it for
        `lease_ms`; an unfinished one comes back after that) and events to record."""

    async def top_up_done(self, item: TopUpAttempt | WalletEvent) -> None:
        """The worker finished `item` (its outcome is recorded): it leaves the queue."""

    async def fail_top_up(self, failure: TopUpFailure) -> TopUpStatus:
        """Record a failed payment of a pending attempt in one atomic step: no longer
        pending, one more failure, then a retry after a backoff or the rule disabled. A
        repeat (not pending any more) changes nothing. Returns the rule's status."""

    async def start_due_top_ups(self, now_ms: int, limit: int) -> int:
        """Look at up to `limit` wallets whose rule is due (a retry, a new rule): start an
        attempt where one is still needed; returns how many started."""


@runtime_checkable
class BatchingBackend(Protocol):
    """A backend that can run many independent mutations in one round trip (pipelined;
    each still atomic on its own). Results are in request order; a refused item is its
    ObolError (a WalletError, or IdempotencyKeyReused), never raised."""

    async def authorize_many(
        self, requests: Sequence[AuthorizeRequest]
    ) -> list[AuthorizeResult | ObolError]: ...

    async def capture_many(
        self, requests: Sequence[CaptureRequest]
    ) -> list[CaptureResult | ObolError]: ...

    async def charge_many(
        self, requests: Sequence[ChargeRequest]
    ) -> list[CaptureResult | ObolError]: ...

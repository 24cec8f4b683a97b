"""The wallet service's exceptions: one root, one class per ErrorInfo reason.

Reasons and metadata keys follow obol.type.v1.ErrorReason; the edge interceptor maps each
to its google.rpc.Status.
"""

from __future__ import annotations

from obol_core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ObolError,
    ResourceExhausted,
    Unavailable,
)


class WalletError(ObolError):
    """Root of every error the wallet service raises on purpose."""


class UnknownCustomer(WalletError, NotFound):
    reason = "UNKNOWN_CUSTOMER"


class UnknownAsset(WalletError, NotFound):
    reason = "UNKNOWN_ASSET"


class UnknownWallet(WalletError, NotFound):
    reason = "UNKNOWN_WALLET"


class UnknownHold(WalletError, NotFound):
    reason = "UNKNOWN_HOLD"


class ResourceNotFound(WalletError, NotFound):
    """A grant or transaction; metadata: resource_type and its id."""

    reason = "RESOURCE_NOT_FOUND"


class ExternalIdTaken(WalletError, AlreadyExists):
    """A unique key is taken (metadata: resource_type and the key)."""

    reason = "RESOURCE_ALREADY_EXISTS"


class AssetMismatch(WalletError, InvalidArgument):
    reason = "ASSET_MISMATCH"


class InsufficientFunds(WalletError, FailedPrecondition):
    """metadata: wallet_id, asset_code, available, required."""

    reason = "INSUFFICIENT_FUNDS"


class WalletFrozen(WalletError, FailedPrecondition):
    reason = "WALLET_FROZEN"


class HoldExpired(WalletError, FailedPrecondition):
    reason = "HOLD_EXPIRED"


class HoldAlreadyCaptured(WalletError, FailedPrecondition):
    reason = "HOLD_ALREADY_CAPTURED"


class HoldVoided(WalletError, FailedPrecondition):
    reason = "HOLD_VOIDED"


class CaptureExceedsHold(WalletError, FailedPrecondition):
    reason = "CAPTURE_EXCEEDS_HOLD"


class GrantNotRefundable(WalletError, FailedPrecondition):
    reason = "GRANT_NOT_REFUNDABLE"


class RefundExceedsRemaining(WalletError, FailedPrecondition):
    reason = "REFUND_EXCEEDS_REMAINING"


class BalanceOutOfRange(WalletError, FailedPrecondition):
    """The change would push a wallet total past 2^53 - 1 (exact range of Lua numbers)."""

    reason = "AMOUNT_OUT_OF_RANGE"


class WalletNotHydrated(WalletError, Unavailable):
    """The wallet's hot state is missing: refused (fail closed) until `obol rebuild`."""

    reason = "WALLET_NOT_HYDRATED"


class Backpressure(WalletError, ResourceExhausted):
    """The partition's write-behind backlog is past its bound; retry after a delay."""

    reason = "BACKPRESSURE"


class NoPriceBook(WalletError, FailedPrecondition):
    """Usage (rather than an amount) was given, but no price book applies yet."""

    reason = "NO_PRICE_BOOK"


class VersionConflict(WalletError, Aborted):
    """An etag did not match: the resource changed since it was read (metadata:
    resource_type, resource_id, etag = the current one)."""

    reason = "VERSION_CONFLICT"

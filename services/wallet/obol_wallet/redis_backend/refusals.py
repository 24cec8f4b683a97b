"""A script's refusal (`{'err', REASON, key, value, ...}`) as the wallet's exception.

The script supplies what only Redis knows (available, held, the asset...); the caller
adds what the request names (wallet_id, hold_id, grant_id, request_id).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from obol_core.errors import ObolError, ValidationFailed
from obol_core.idempotency import IdempotencyKeyReused

from ..errors import (
    AssetMismatch,
    Backpressure,
    BalanceOutOfRange,
    CaptureExceedsHold,
    ExternalIdTaken,
    GrantNotRefundable,
    HoldAlreadyCaptured,
    HoldExpired,
    HoldVoided,
    InsufficientFunds,
    RefundExceedsRemaining,
    ResourceNotFound,
    UnknownHold,
    WalletFrozen,
    WalletNotHydrated,
)

BACKPRESSURE_RETRY_SECONDS = 1.0

_Meta = dict[str, str]


def _only(meta: _Meta, *names: str) -> _Meta:
    return {name: meta[name] for name in names if name in meta}


def _not_hydrated(m: _Meta) -> ObolError:
    return WalletNotHydrated(
        f"wallet {m['wallet_id']} has no hot state; refused until it is rebuilt",
        metadata=_only(m, "wallet_id"),
    )


def _key_reused(m: _Meta) -> ObolError:
    return IdempotencyKeyReused(
        f"request_id {m['request_id']!r} was already used for a different request",
        metadata=_only(m, "request_id", "wallet_id"),
    )


def _backpressure(m: _Meta) -> ObolError:
    return Backpressure(
        f"the ledger backlog of wallet {m['wallet_id']}'s partition ({m['backlog']}) is past "
        f"its bound ({m['limit']}); retry later",
        metadata=_only(m, "wallet_id", "backlog", "limit"),
        retry_delay_seconds=BACKPRESSURE_RETRY_SECONDS,
    )


def _frozen(m: _Meta) -> ObolError:
    return WalletFrozen(f"wallet {m['wallet_id']} is frozen", metadata=_only(m, "wallet_id"))


def _insufficient(m: _Meta) -> ObolError:
    return InsufficientFunds(
        f"wallet {m['wallet_id']} has {m['available']} {m['asset_code']} available, "
        f"{m['required']} required",
        metadata=_only(m, "wallet_id", "asset_code", "available", "required"),
    )


def _hold_error(cls: type[ObolError], text: str) -> Callable[[_Meta], ObolError]:
    def build(m: _Meta) -> ObolError:
        return cls(f"hold {m['hold_id']} {text}", metadata=_only(m, "hold_id"))

    return build


def _exceeds_hold(m: _Meta) -> ObolError:
    return CaptureExceedsHold(
        f"capture of {m['required']} exceeds hold {m['hold_id']} ({m['held']} held) and "
        "overcapture is not allowed",
        metadata=_only(m, "hold_id", "asset_code", "held", "required"),
    )


def _unknown_grant(m: _Meta) -> ObolError:
    return ResourceNotFound(
        f"wallet {m['wallet_id']} has no grant {m['grant_id']!r} with funds left",
        metadata={"resource_type": "grant", "grant_id": m["grant_id"]},
    )


def _not_refundable(m: _Meta) -> ObolError:
    return GrantNotRefundable(
        f"grant {m['grant_id']} is {m['kind']}; only purchased grants are refundable",
        metadata=_only(m, "grant_id", "kind"),
    )


def _refund_exceeds(m: _Meta) -> ObolError:
    return RefundExceedsRemaining(
        f"refund of {m['required']} exceeds grant {m['grant_id']}'s remaining {m['remaining']}",
        metadata=_only(m, "grant_id", "remaining", "required"),
    )


def _out_of_range(m: _Meta) -> ObolError:
    return BalanceOutOfRange(
        f"wallet {m['wallet_id']}: {m['required']} more would take its total past "
        f"{m['limit']} (now {m['total']})",
        metadata=_only(m, "wallet_id", "total", "required", "limit"),
    )


def _exists(m: _Meta) -> ObolError:
    return ExternalIdTaken(
        f"{m['resource_type']} {m['resource_id']} already exists",
        metadata=_only(m, "resource_type", "resource_id"),
    )


def _grant_expired(m: _Meta) -> ObolError:
    return ValidationFailed.for_field("expires_ms", f"{m['expires_ms']} is not in the future")


def _asset_mismatch(m: _Meta) -> ObolError:
    return AssetMismatch(
        f"wallet {m['wallet_id']} holds {m['expected_asset_code']}, not {m['asset_code']}",
        metadata=_only(m, "wallet_id", "asset_code", "expected_asset_code"),
    )


_BUILDERS: dict[str, Callable[[_Meta], ObolError]] = {
    "WALLET_NOT_HYDRATED": _not_hydrated,
    "IDEMPOTENCY_KEY_REUSED": _key_reused,
    "BACKPRESSURE": _backpressure,
    "WALLET_FROZEN": _frozen,
    "INSUFFICIENT_FUNDS": _insufficient,
    "UNKNOWN_HOLD": _hold_error(UnknownHold, "is unknown"),
    "HOLD_EXPIRED": _hold_error(HoldExpired, "has expired"),
    "HOLD_ALREADY_CAPTURED": _hold_error(HoldAlreadyCaptured, "is already captured"),
    "HOLD_VOIDED": _hold_error(HoldVoided, "was voided"),
    "CAPTURE_EXCEEDS_HOLD": _exceeds_hold,
    "UNKNOWN_GRANT": _unknown_grant,
    "GRANT_NOT_REFUNDABLE": _not_refundable,
    "REFUND_EXCEEDS_REMAINING": _refund_exceeds,
    "AMOUNT_OUT_OF_RANGE": _out_of_range,
    "ALREADY_EXISTS": _exists,
    "GRANT_EXPIRED": _grant_expired,
    "ASSET_MISMATCH": _asset_mismatch,
}


def refusal(reply: list[bytes], context: Mapping[str, str]) -> ObolError:
    """The exception for an `err` reply; `context` names the request's resources."""
    reason = reply[1].decode()
    meta = dict(context)
    pairs = [value.decode() for value in reply[2:]]
    meta.update(zip(pairs[::2], pairs[1::2], strict=True))
    builder = _BUILDERS.get(reason)
    if builder is None:
        raise RuntimeError(f"unexpected script refusal {reason!r}")
    return builder(meta)

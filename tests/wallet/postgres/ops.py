"""Request builders for backend tests: every call gets a fresh request id unless given."""

from __future__ import annotations

import hashlib
import itertools

from obol_core.ids import new_id, new_ulid
from obol_wallet.model import (
    NEVER_EXPIRES,
    AuthorizeRequest,
    CaptureRequest,
    ChargeRequest,
    CostRecord,
    GrantKind,
    GrantRequest,
    Idempotency,
    RefundRequest,
    SettingsRequest,
    VoidRequest,
)
from obol_wallet.partitions import grant_id_for, hold_id_for

from .support import START_MS

_ids = itertools.count(1)


def idem(request_id: str | None = None, content: str = "") -> Idempotency:
    request_id = request_id or f"req-{next(_ids)}"
    digest = hashlib.sha256(f"{request_id}|{content}".encode()).hexdigest()
    return Idempotency(request_id, digest)


def grant(
    wallet_id: str,
    amount: int,
    *,
    kind: GrantKind = GrantKind.PURCHASED,
    priority: int = 100,
    effective_ms: int = START_MS,
    expires_ms: int = NEVER_EXPIRES,
    now_ms: int = START_MS,
    request_id: str | None = None,
) -> GrantRequest:
    return GrantRequest(
        idem=idem(request_id, f"grant{amount}"),
        wallet_id=wallet_id,
        grant_id=grant_id_for(wallet_id, new_ulid()),
        entry_id=new_id("txn"),
        kind=kind,
        amount=amount,
        priority=priority,
        effective_ms=effective_ms,
        expires_ms=expires_ms,
        now_ms=now_ms,
    )


def authorize(
    wallet_id: str,
    amount: int,
    *,
    ttl_ms: int = 60_000,
    now_ms: int = START_MS,
    request_id: str | None = None,
    content: str | None = None,
) -> AuthorizeRequest:
    return AuthorizeRequest(
        idem=idem(request_id, content if content is not None else f"auth{amount}"),
        wallet_id=wallet_id,
        hold_id=hold_id_for(wallet_id, new_ulid()),
        entry_id=new_id("txn"),
        amount=amount,
        ttl_ms=ttl_ms,
        now_ms=now_ms,
    )


def capture(
    wallet_id: str,
    hold_id: str,
    amount: int,
    *,
    overcapture: bool = False,
    cost: CostRecord | None = None,
    now_ms: int = START_MS,
    request_id: str | None = None,
) -> CaptureRequest:
    return CaptureRequest(
        idem=idem(request_id, f"cap{amount}"),
        wallet_id=wallet_id,
        hold_id=hold_id,
        entry_id=new_id("txn"),
        amount=amount,
        allow_overcapture=overcapture,
        now_ms=now_ms,
        cost=cost,
    )


def void(wallet_id: str, hold_id: str, *, now_ms: int = START_MS) -> VoidRequest:
    return VoidRequest(idem(), wallet_id, hold_id, new_id("txn"), now_ms)


def charge(
    wallet_id: str,
    amount: int,
    *,
    now_ms: int = START_MS,
    cost: CostRecord | None = None,
    request_id: str | None = None,
) -> ChargeRequest:
    return ChargeRequest(
        idem=idem(request_id, f"charge{amount}"),
        wallet_id=wallet_id,
        entry_id=new_id("txn"),
        amount=amount,
        now_ms=now_ms,
        cost=cost,
    )


def refund(wallet_id: str, grant_id: str, amount: int, *, now_ms: int = START_MS) -> RefundRequest:
    return RefundRequest(idem(), wallet_id, grant_id, new_id("txn"), amount, now_ms)


def settings(
    wallet_id: str,
    *,
    frozen: bool | None = None,
    overdraft_limit: int | None = None,
    now_ms: int = START_MS,
) -> SettingsRequest:
    return SettingsRequest(
        idem(),
        wallet_id,
        new_id("txn"),
        now_ms,
        frozen=frozen,
        overdraft_limit=overdraft_limit,
    )

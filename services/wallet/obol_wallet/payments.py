"""Payment providers: how the auto top-up worker charges a customer's payment method.

A charge carries an idempotency key (the top-up attempt id): charging the same key again
never charges twice, it returns the first outcome (as Stripe-like providers do). So a
worker that crashed after charging and retries the attempt gets the first charge back.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Protocol


class PaymentOutcome(enum.Enum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"  # worth retrying later (insufficient funds on the card, ...)
    INVALID = "invalid"  # the payment method cannot be charged at all (removed, unknown)


@dataclass(frozen=True)
class PaymentResult:
    outcome: PaymentOutcome
    payment_id: str  # the provider's id of the charge ('' when nothing was charged)
    message: str = ""  # the provider's reason for a failure


class PaymentProvider(Protocol):
    async def charge(
        self, *, idempotency_key: str, payment_method_id: str, asset_code: str, amount: int
    ) -> PaymentResult:
        """Charge `amount` (atomic units of `asset_code`) once per idempotency key."""


@dataclass(frozen=True)
class SandboxCharge:
    idempotency_key: str
    payment_method_id: str
    asset_code: str
    amount: int
    result: PaymentResult


class SandboxPaymentProvider:
    """A deterministic provider for development and tests: payment methods whose id starts
    with `pm_ok` are charged, `pm_fail...` are declined, any other is invalid.

    Every distinct charge is kept in `charges` (by idempotency key); `calls` counts every
    call, repeats included. A key reused with other parameters is refused (ValueError).
    """

    def __init__(self) -> None:
        self.charges: dict[str, SandboxCharge] = {}
        self.calls = 0

    @property
    def succeeded(self) -> list[SandboxCharge]:
        """The charges that took money."""
        return [c for c in self.charges.values() if c.result.outcome is PaymentOutcome.SUCCEEDED]

    async def charge(
        self, *, idempotency_key: str, payment_method_id: str, asset_code: str, amount: int
    ) -> PaymentResult:
        self.calls += 1
        seen = self.charges.get(idempotency_key)
        if seen is not None:
            if (seen.payment_method_id, seen.asset_code, seen.amount) != (
                payment_method_id,
                asset_code,
                amount,
            ):
                raise ValueError(
                    f"idempotency key {idempotency_key!r} was used for a different charge"
                )
            return seen.result
        if payment_method_id.startswith("pm_ok"):
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
            result = PaymentResult(PaymentOutcome.SUCCEEDED, f"sandbox_{digest}")
        elif payment_method_id.startswith("pm_fail"):
            result = PaymentResult(PaymentOutcome.DECLINED, "", "card_declined")
        else:
            result = PaymentResult(PaymentOutcome.INVALID, "", "unknown payment method")
        self.charges[idempotency_key] = SandboxCharge(
            idempotency_key, payment_method_id, asset_code, amount, result
        )
        return result

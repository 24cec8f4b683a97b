"""The wallet service's exceptions: one root, one class per ErrorInfo reason."""

from __future__ import annotations

from obol_core.errors import AlreadyExists, NotFound, ObolError


class WalletError(ObolError):
    """Root of every error the wallet service raises on purpose."""


class UnknownCustomer(WalletError, NotFound):
    reason = "UNKNOWN_CUSTOMER"


class ExternalIdTaken(WalletError, AlreadyExists):
    """Another customer already has this external_id (metadata: resource_type, external_id)."""

    reason = "RESOURCE_ALREADY_EXISTS"

"""The pricing service's exceptions: one root, one class per ErrorInfo reason."""

from __future__ import annotations

from obol_core.errors import AlreadyExists, NotFound, ObolError


class PricingError(ObolError):
    """Root of every error the pricing service raises on purpose."""


class ResourceNotFound(PricingError, NotFound):
    """metadata: resource_type and the id asked for."""

    reason = "RESOURCE_NOT_FOUND"


class ResourceAlreadyExists(PricingError, AlreadyExists):
    """metadata: resource_type and the conflicting keys."""

    reason = "RESOURCE_ALREADY_EXISTS"

"""The costs service's exceptions: one root, one class per ErrorInfo reason."""

from __future__ import annotations

from obol_core.errors import FailedPrecondition, NotFound, ObolError


class CostsError(ObolError):
    """Root of every error the costs service raises on purpose."""


class NoMatchingRate(CostsError, FailedPrecondition):
    """metadata: rate_card_id, provider, model."""

    reason = "NO_MATCHING_RATE"


class ResourceNotFound(CostsError, NotFound):
    """metadata: resource_type and the id asked for."""

    reason = "RESOURCE_NOT_FOUND"

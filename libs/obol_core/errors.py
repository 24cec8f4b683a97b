"""The exception hierarchy every Obol service raises, and its mapping to `google.rpc.Status`.

Domain code raises an `ObolError` subclass; the gRPC edge turns it into a rich status
(`ErrorInfo` with a machine-readable reason in the "obol.dev" domain, plus `BadRequest`
field violations for invalid input, and `RetryInfo` when a retry delay is given). Reasons
are the names of `obol.type.v1.ErrorReason` without their prefix. Each service defines
its own root and concrete errors::

    class WalletError(ObolError): ...

    class InsufficientFunds(WalletError, FailedPrecondition):
        reason = "INSUFFICIENT_FUNDS"

    raise InsufficientFunds("wallet w1 has 3 available, 5 required",
                            metadata={"available": 3, "required": 5})

Any other exception is a bug: it becomes INTERNAL with a generic message, so that no
internal detail (SQL, hostnames, secrets in reprs) ever reaches a client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import asyncpg
import grpc
import redis.exceptions
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]

ERROR_DOMAIN = "obol.dev"
INTERNAL_MESSAGE = "internal error"

__all__ = [
    "ERROR_DOMAIN",
    "INTERNAL_MESSAGE",
    "Aborted",
    "AlreadyExists",
    "AmountOutOfRange",
    "DependencyUnavailable",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "ObolError",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "StoreFull",
    "Unauthenticated",
    "Unavailable",
    "ValidationFailed",
    "dependency_failure",
    "status_from_exception",
    "to_rpc_status",
]


class ObolError(Exception):
    """Root of every error a client is meant to see.

    `code` and `reason` are class-level: a concrete error type has exactly one reason.
    Metadata values are stringified because `ErrorInfo.metadata` is `map<string, string>`.
    `retry_delay_seconds` (for retryable errors) is sent as a `google.rpc.RetryInfo`.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str | int] | None = None,
        retry_delay_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}
        self.retry_delay_seconds = retry_delay_seconds


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` is a path like `items[3].amount.amount`."""

    field: str
    description: str
    reason: str = ""


class InvalidArgument(ObolError):
    """Bad input. ErrorInfo metadata `field` names the first bad field unless given."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        field_violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str | int] | None = None,
    ) -> None:
        metadata = dict(metadata or {})
        if field_violations:
            metadata.setdefault("field", field_violations[0].field)
        super().__init__(message, metadata=metadata)
        self.field_violations: list[FieldViolation] = list(field_violations)

    @classmethod
    def for_field(
        cls, field: str, description: str, *, metadata: Mapping[str, str | int] | None = None
    ) -> Self:
        """The common case: exactly one field is wrong; the message names it."""
        return cls(
            f"{field}: {description}",
            field_violations=[FieldViolation(field, description)],
            metadata=metadata,
        )


class ValidationFailed(InvalidArgument):
    """The request breaks its schema rules (protovalidate) or a service's own field rules."""

    reason = "VALIDATION_FAILED"


class AmountOutOfRange(InvalidArgument):
    """An amount or quantity outside what every component computes exactly (+/-(2^53 - 1))."""

    reason = "AMOUNT_OUT_OF_RANGE"


class NotFound(ObolError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(ObolError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(ObolError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(ObolError):
    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class ResourceExhausted(ObolError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(ObolError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class DependencyUnavailable(Unavailable):
    """A store or service the operation needs did not answer (see `status_from_exception`).
    Metadata: `dependency` ("redis", "postgres", or "network" when unknown)."""

    reason = "DEPENDENCY_UNAVAILABLE"


class StoreFull(ResourceExhausted):
    """Redis is at `maxmemory` and, with `noeviction` (money is never evicted), refuses
    every change; a script refused this way has changed nothing (Redis checks memory at a
    script's first write). Metadata: `scope` ("redis_memory")."""

    reason = "BACKPRESSURE"


# Exceptions that mean "a dependency is down or unreachable right now", not a bug: the
# client should retry. Redis: no connection or no answer in time, loading its data, a
# cluster without a master for a slot or whose redirects did not settle, a replica
# refusing writes (mid-failover), a slot migrating. Postgres: connection-class errors
# (SQLSTATE 08), the server shutting down or not accepting connections yet (57P0x), too
# many connections.
_DEPENDENCY_ERRORS: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    (
        (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ClusterError,  # down, or redirects exhausted ("TTL exhausted")
            redis.exceptions.ReadOnlyError,
            redis.exceptions.TryAgainError,
            redis.exceptions.AskError,
            redis.exceptions.MovedError,
        ),
        "redis",
    ),
    (
        (
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,
            asyncpg.TooManyConnectionsError,
        ),
        "postgres",
    ),
    ((ConnectionError, TimeoutError), "network"),
)


_REDIS_OOM = "OOM command not allowed"


def dependency_failure(exc: BaseException) -> ObolError | None:
    """The retryable error that `exc` stands for if a dependency failed, else None: a
    full Redis is RESOURCE_EXHAUSTED, a dependency down or unreachable UNAVAILABLE."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        # A script's refused write comes back as a script error quoting Redis's reply.
        isinstance(exc, redis.exceptions.ResponseError) and _REDIS_OOM in str(exc)
    ):
        return StoreFull(
            "Redis is out of memory and refuses changes (maxmemory with noeviction); "
            "nothing was applied, retry later",
            metadata={"scope": "redis_memory"},
            retry_delay_seconds=5.0,
        )
    for types, dependency in _DEPENDENCY_ERRORS:
        if isinstance(exc, types):
            return DependencyUnavailable(
                f"{dependency} is unavailable; retry later (a mutation with the same "
                "request_id, which applies it at most once)",
                metadata={"dependency": dependency},
                retry_delay_seconds=1.0,
            )
    return None


class PermissionDenied(ObolError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(ObolError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class OutOfRange(ObolError):
    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "OUT_OF_RANGE"


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(err: ObolError) -> status_pb2.Status:
    """The rich status for `err`: ErrorInfo always, BadRequest when fields are named."""
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=err.reason, domain=ERROR_DOMAIN, metadata=err.metadata
            )
        )
    ]
    if err.retry_delay_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(err.retry_delay_seconds * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if isinstance(err, InvalidArgument) and err.field_violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.reason
                        )
                        for v in err.field_violations
                    ]
                )
            )
        )
    return status_pb2.Status(code=err.code.value[0], message=err.message, details=details)


def status_from_exception(exc: BaseException) -> status_pb2.Status:
    """Map any exception raised by a handler to the status sent to the client.

    A store that is down or unreachable (Redis, Postgres, the network) is UNAVAILABLE
    `DEPENDENCY_UNAVAILABLE` with the dependency named and a RetryInfo. A failing
    downstream call (`grpc.aio.AioRpcError`) that was UNAVAILABLE or timed out is reported
    as UNAVAILABLE so that callers may retry; anything else unexpected is INTERNAL with a
    generic message. The caller is responsible for logging the original.
    """
    if isinstance(exc, ObolError):
        return to_rpc_status(exc)
    if (failure := dependency_failure(exc)) is not None:
        return to_rpc_status(failure)
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ):
        return to_rpc_status(Unavailable("a dependency is unavailable, retry later"))
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=INTERNAL_MESSAGE,
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))],
    )

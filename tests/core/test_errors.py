import asyncpg
import grpc
import pytest
import redis.exceptions
from google.rpc import code_pb2, error_details_pb2

from obol_core.errors import (
    ERROR_DOMAIN,
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ObolError,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    status_from_exception,
    to_rpc_status,
)


class WalletError(ObolError):
    pass


class InsufficientFunds(WalletError, FailedPrecondition):
    reason = "INSUFFICIENT_FUNDS"


def unpack_error_info(status: object) -> error_details_pb2.ErrorInfo:
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]  # type: ignore[attr-defined]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    return info


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound, grpc.StatusCode.NOT_FOUND),
        (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
        (Aborted, grpc.StatusCode.ABORTED),
        (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Unavailable, grpc.StatusCode.UNAVAILABLE),
        (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
        (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    ],
)
def test_each_error_maps_to_its_code(error_type: type[ObolError], code: grpc.StatusCode) -> None:
    status = to_rpc_status(error_type("boom"))
    assert status.code == code.value[0]
    assert status.message == "boom"
    info = unpack_error_info(status)
    assert info.reason == error_type.reason == code.name
    assert info.domain == ERROR_DOMAIN


def test_service_error_with_reason_and_metadata() -> None:
    err = InsufficientFunds("not enough", metadata={"available": 3, "required": "5"})
    assert isinstance(err, WalletError)
    status = to_rpc_status(err)
    assert status.code == code_pb2.FAILED_PRECONDITION
    info = unpack_error_info(status)
    assert info.reason == "INSUFFICIENT_FUNDS"
    assert dict(info.metadata) == {"available": "3", "required": "5"}
    assert status_from_exception(err) == status


def test_invalid_argument_carries_bad_request() -> None:
    err = InvalidArgument(
        "bad",
        field_violations=[
            FieldViolation("items[0].amount", "must be >= 0", "int64.gte"),
            FieldViolation("asset_code", "required"),
        ],
    )
    status = to_rpc_status(err)
    requests = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    bad_request = error_details_pb2.BadRequest()
    requests[0].Unpack(bad_request)
    assert [(v.field, v.description, v.reason) for v in bad_request.field_violations] == [
        ("items[0].amount", "must be >= 0", "int64.gte"),
        ("asset_code", "required", ""),
    ]


def test_for_field_names_the_field() -> None:
    err = InvalidArgument.for_field("hold.ttl", "must be positive")
    assert err.message == "hold.ttl: must be positive"
    assert err.field_violations == [FieldViolation("hold.ttl", "must be positive")]


def test_unknown_exceptions_become_internal_without_leaking() -> None:
    status = status_from_exception(RuntimeError("password=hunter2 at db.internal"))
    assert status.code == code_pb2.INTERNAL
    assert status.message == "internal error"
    assert "hunter2" not in str(status)
    assert unpack_error_info(status).reason == "INTERNAL"


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        (redis.exceptions.ConnectionError("Error 111 connecting to 10.0.0.5:6379"), "redis"),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), "redis"),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica"), "redis"),
        (redis.exceptions.ClusterDownError("The cluster is down"), "redis"),
        (redis.exceptions.ClusterError("TTL exhausted."), "redis"),
        (redis.exceptions.TryAgainError("Multiple keys request during rehashing"), "redis"),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), "postgres"),
        (
            asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
            "postgres",
        ),
        (asyncpg.exceptions.TooManyConnectionsError("too many clients"), "postgres"),
        (ConnectionRefusedError(111, "Connection refused"), "network"),
    ],
)
def test_an_unreachable_dependency_is_unavailable_and_retryable(
    exc: BaseException, dependency: str
) -> None:
    status = status_from_exception(exc)
    assert status.code == code_pb2.UNAVAILABLE
    info = unpack_error_info(status)
    assert (info.reason, dict(info.metadata)) == (
        "DEPENDENCY_UNAVAILABLE",
        {"dependency": dependency},
    )
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
    assert "10.0.0.5" not in status.message  # the cause's details stay in the server's log


def test_other_redis_and_postgres_errors_stay_internal() -> None:
    """A script error or a constraint violation is a bug, not an outage."""
    for exc in (
        redis.exceptions.ResponseError("ERR Error running script"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
    ):
        assert status_from_exception(exc).code == code_pb2.INTERNAL


def test_a_full_redis_is_resource_exhausted() -> None:
    for exc in (
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
        redis.exceptions.ResponseError(
            "Error running script (call to f_12c6): @user_script:682: @user_script: 682: "
            "-OOM command not allowed when used memory > 'maxmemory'."
        ),
    ):
        status = status_from_exception(exc)
        assert status.code == code_pb2.RESOURCE_EXHAUSTED
        info = unpack_error_info(status)
        assert (info.reason, dict(info.metadata)) == ("BACKPRESSURE", {"scope": "redis_memory"})

"""grpc.aio server interceptors: the edge (trace span, validation, error mapping, logs,
metrics) and auth.

A grpc.aio interceptor only sees the method name and metadata; to act on requests and
errors it returns a new `RpcMethodHandler` wrapping the original behaviour (keeping its
(de)serializers). The first interceptor runs in a fresh `contextvars.Context` that is
then used for every later interceptor and for the handler itself, which is how the
authenticated key name travels from `AuthInterceptor` to the handler and the log line.

Order (see `grpc_server.build_server`): `EdgeInterceptor`, then `AuthInterceptor`. The edge
therefore traces, logs and maps auth failures too, and auth is decided before any payload
validation (UNAUTHENTICATED wins over INVALID_ARGUMENT).

Streaming handlers must consume requests through the request iterator (not
`context.read()`), so that every message is validated.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
import grpc.aio
import structlog
from grpc_status import rpc_status
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .apikeys import ApiKey, KeyRing, ScopePolicy
from .errors import ObolError, PermissionDenied, Unauthenticated, status_from_exception
from .validation import validate_request

__all__ = [
    "AuthInterceptor",
    "EdgeInterceptor",
    "InsufficientScope",
    "InvalidCredentials",
    "current_api_key_name",
    "is_infrastructure_method",
]

_TRequest = TypeVar("_TRequest")
_TResponse = TypeVar("_TResponse")
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behavior = Callable[..., Any]

_INFRASTRUCTURE_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

_api_key_name: ContextVar[str | None] = ContextVar("obol_api_key_name", default=None)
_auth_rejected: ContextVar[bool] = ContextVar("obol_auth_rejected", default=False)

_log = structlog.get_logger("obol.rpc")
# structlog's stdlib logger drops a filtered event only after building it through its
# proxy; asking the stdlib logger first makes a filtered RPC line (OBOL_LOG_LEVEL=warning)
# cost nothing.
_stdlib_log = logging.getLogger("obol.rpc")
_tracer = trace.get_tracer("obol_core.rpc")

_WARNING_CODES = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# A server span's status is ERROR for these (OpenTelemetry's gRPC conventions); a client's
# mistake (INVALID_ARGUMENT, NOT_FOUND...) leaves it unset.
_SERVER_FAULT_CODES = _ERROR_CODES | {
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
}


def current_api_key_name() -> str | None:
    """Name of the API key that authenticated the current RPC (None without auth)."""
    return _api_key_name.get()


def is_infrastructure_method(method: str) -> bool:
    """Health and reflection RPCs: never authenticated, validated or logged per call."""
    return method.startswith(_INFRASTRUCTURE_PREFIXES)


def _server_span(method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """The RPC's SERVER span (current while the handler runs), child of the caller's
    W3C trace context from the request metadata; named and attributed as OpenTelemetry's
    gRPC instrumentation does, which the edge replaces: one wrapper per RPC, not two."""
    metadata = context.invocation_metadata() or ()
    carrier = {key: value for key, value in metadata if isinstance(value, str)}
    service, _, name = method.lstrip("/").partition("/")
    return _tracer.start_as_current_span(
        method,
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
        set_status_on_exception=False,
    )


def _behavior(handler: Handler) -> Behavior:
    # The stubs type behaviours as synchronous; under grpc.aio they are coroutine functions
    # or async generator functions.
    behavior: Behavior | None
    if handler.request_streaming:
        behavior = handler.stream_stream if handler.response_streaming else handler.stream_unary
    else:
        behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
    assert behavior is not None
    return behavior


def _with_behavior(handler: Handler, behavior: Behavior) -> Handler:
    """A handler of the same kind and (de)serializers as `handler`, running `behavior`."""
    if handler.request_streaming and handler.response_streaming:
        factory = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        factory = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        factory = grpc.unary_stream_rpc_method_handler
    else:
        factory = grpc.unary_unary_rpc_method_handler
    return factory(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def _validated(requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        validate_request(request)
        yield request


class _Call:
    """Bookkeeping for one RPC at the edge: outcome, span status, the canonical log line,
    metrics."""

    def __init__(
        self,
        edge: EdgeInterceptor,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        span: Span,
    ) -> None:
        self._edge = edge
        self._method = method
        self._context = context
        self._span = span
        self._started = time.perf_counter()

    def succeeded(self) -> None:
        # A handler may also end an RPC with context.set_code() instead of raising.
        self._record(self._context.code() or grpc.StatusCode.OK)

    def cancelled(self) -> None:
        remaining = self._context.time_remaining()
        timed_out = remaining is not None and remaining <= 0
        self._record(grpc.StatusCode.DEADLINE_EXCEEDED if timed_out else grpc.StatusCode.CANCELLED)

    def aborted(self) -> None:
        """The handler (or an inner interceptor) already called `context.abort`."""
        self._record(self._context.code() or grpc.StatusCode.UNKNOWN)

    async def failed(self, exc: Exception) -> NoReturn:
        grpc_status = rpc_status.to_status(status_from_exception(exc))
        if isinstance(exc, ObolError):
            self._record(grpc_status.code, reason=exc.reason, error=exc.message)
        else:
            self._span.record_exception(exc)
            self._record(grpc_status.code, exc_info=exc)
        # context.abort (rather than abort_with_status) so that the OpenTelemetry context
        # wrapper sees the code; the rich status travels in the trailing metadata.
        await self._context.abort(
            grpc_status.code, grpc_status.details, grpc_status.trailing_metadata
        )

    def _record(self, code: grpc.StatusCode, **fields: Any) -> None:
        duration_ms = (time.perf_counter() - self._started) * 1000.0
        attributes = {"method": self._method, "code": code.name}
        self._span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_FAULT_CODES:
            self._span.set_status(Status(StatusCode.ERROR, code.name))
        self._edge.requests.add(1, attributes)
        self._edge.duration.record(duration_ms, attributes)
        if code in _ERROR_CODES:
            level, log = logging.ERROR, _log.error
        elif code in _WARNING_CODES:
            level, log = logging.WARNING, _log.warning
        else:
            level, log = logging.INFO, _log.info
        if not _stdlib_log.isEnabledFor(level):
            return
        log(
            "rpc",
            method=self._method,
            code=code.name,
            duration_ms=round(duration_ms, 3),
            peer=self._context.peer(),
            api_key=current_api_key_name(),
            **fields,
        )


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    """Traces, validates, maps exceptions to rich statuses, logs and measures every RPC.

    - a SERVER span per RPC (OpenTelemetry), child of the caller's trace context, with the
      final gRPC status code (status ERROR for server faults);
    - every request message (each one of a client or bidi stream) is checked with
      protovalidate; violations become INVALID_ARGUMENT with BadRequest field violations;
    - an `ObolError` becomes its status (ErrorInfo, BadRequest); any other exception
      becomes INTERNAL with a generic message and is logged with its stack;
    - exactly one structured log line ("rpc") per RPC, with method, code, duration_ms,
      peer, api_key and the trace/span ids; plus `obol.rpc.server.requests` (counter) and
      `obol.rpc.server.duration` (histogram, ms) with `method` and `code` attributes.
    Health and reflection RPCs pass through untouched.
    """

    def __init__(self, *, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("obol_core.rpc")
        self.requests = meter.create_counter(
            "obol.rpc.server.requests", unit="{request}", description="RPCs handled, by outcome"
        )
        self.duration = meter.create_histogram(
            "obol.rpc.server.duration", unit="ms", description="RPC handling time"
        )

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails],
            Awaitable[grpc.RpcMethodHandler[_TRequest, _TResponse] | None],
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_TRequest, _TResponse] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_infrastructure_method(method):
            return handler
        inner = _behavior(handler)
        if handler.response_streaming:
            return _with_behavior(
                handler, self._streaming(method, inner, handler.request_streaming)
            )
        return _with_behavior(handler, self._unary(method, inner, handler.request_streaming))

    def _unary(self, method: str, inner: Behavior, request_streaming: bool) -> Behavior:
        async def unary_response(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with _server_span(method, context) as span:
                call = _Call(self, method, context, span)
                try:
                    request = _checked(request, request_streaming)
                    response = await inner(request, context)
                except grpc.aio.AbortError:
                    call.aborted()
                    raise
                except Exception as exc:
                    await call.failed(exc)
                except BaseException:  # CancelledError: the client went away or timed out
                    call.cancelled()
                    raise
                call.succeeded()
                return response

        return unary_response

    def _streaming(self, method: str, inner: Behavior, request_streaming: bool) -> Behavior:
        async def streaming_response(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            with _server_span(method, context) as span:
                call = _Call(self, method, context, span)
                try:
                    request = _checked(request, request_streaming)
                    result = inner(request, context)
                    if inspect.isasyncgen(result):
                        async for response in result:
                            yield response
                    else:  # a coroutine handler that writes with context.write()
                        await result
                except grpc.aio.AbortError:
                    call.aborted()
                    raise
                except Exception as exc:
                    await call.failed(exc)
                except BaseException:  # CancelledError or GeneratorExit
                    call.cancelled()
                    raise
                call.succeeded()

        return streaming_response


def _checked(request: Any, request_streaming: bool) -> Any:
    """Validate a unary request now, or wrap a request stream to validate each message.

    Skipped when auth has already rejected the RPC, so that its error wins.
    """
    if _auth_rejected.get():
        return request
    if request_streaming:
        return _validated(request)
    validate_request(request)
    return request


class InvalidCredentials(Unauthenticated):
    """No API key was sent, or it is not a configured one."""

    reason = "INVALID_CREDENTIALS"


class InsufficientScope(PermissionDenied):
    """The key is valid but its scope is below what the method requires."""

    reason = "INSUFFICIENT_SCOPE"


def _presented_key(metadata: Any) -> str | None:
    """The key from `x-api-key`, else from `authorization: Bearer <key>`."""
    bearer: str | None = None
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        if key == "x-api-key" and value.strip():
            return value.strip()
        if key == "authorization":
            scheme, _, credential = value.strip().partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                bearer = credential.strip()
    return bearer


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """API-key authentication and scope authorization for every non-infrastructure RPC.

    The decision is made before the handler runs. A rejected RPC gets a handler that
    raises `InvalidCredentials` (UNAUTHENTICATED) or `InsufficientScope` (PERMISSION_DENIED,
    ErrorInfo metadata `required_scope`), which `EdgeInterceptor` (placed before this one)
    turns into the status and logs. With `enabled=False` (OBOL_AUTH=disabled) every RPC
    passes through.
    """

    def __init__(
        self, keys: Sequence[ApiKey], policy: ScopePolicy, *, enabled: bool = True
    ) -> None:
        self._keys = KeyRing(keys)
        self._policy = policy
        self._enabled = enabled

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails],
            Awaitable[grpc.RpcMethodHandler[_TRequest, _TResponse] | None],
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_TRequest, _TResponse] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self._enabled or is_infrastructure_method(method):
            return handler
        try:
            key = self._authorize(method, handler_call_details.invocation_metadata)
        except ObolError as err:
            _auth_rejected.set(True)
            return _with_behavior(handler, _rejecting(err, handler.response_streaming))
        _api_key_name.set(key.name)
        structlog.contextvars.bind_contextvars(api_key=key.name)
        return handler

    def _authorize(self, method: str, metadata: Any) -> ApiKey:
        presented = _presented_key(metadata)
        if presented is None:
            raise InvalidCredentials(
                "missing API key: send 'authorization: Bearer <key>' (or 'x-api-key') metadata"
            )
        key = self._keys.lookup(presented)
        if key is None:
            raise InvalidCredentials("invalid API key")
        required = self._policy.required_scope(method)
        if key.scope < required:
            _api_key_name.set(key.name)
            raise InsufficientScope(
                f"API key {key.name!r} has scope {key.scope.label}, "
                f"{method} requires {required.label}",
                metadata={"required_scope": required.label},
            )
        return key


def _rejecting(err: ObolError, response_streaming: bool) -> Behavior:
    if response_streaming:

        async def reject_stream(
            _request: Any, _context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            raise err
            yield  # unreachable: makes this an async generator, as streaming handlers are

        return reject_stream

    async def reject(_request: Any, _context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        raise err

    return reject

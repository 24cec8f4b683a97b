"""Outgoing gRPC channels between Obol services (and from the CLI and tests).

Every call gets the API key (as `authorization: Bearer <key>` metadata, unless the caller
set credentials itself),
a trace context (W3C `traceparent`, by the OpenTelemetry interceptors), and a deadline:
a unary-response call without one gets `deadline_seconds`. Response streams (watches,
snapshot streams) are long-lived by design and get no default deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio
from opentelemetry.instrumentation.grpc import aio_client_interceptors

__all__ = ["create_channel"]

_TRequest = TypeVar("_TRequest")
_TResponse = TypeVar("_TResponse")

_AUTH_METADATA_KEYS = frozenset({"x-api-key", "authorization"})


class _CallDefaults:
    def __init__(self, api_key: str | None, deadline_seconds: float) -> None:
        self._api_key = api_key
        self._deadline_seconds = deadline_seconds

    def apply(
        self, details: grpc.aio.ClientCallDetails, *, default_deadline: bool
    ) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if self._api_key is not None and _AUTH_METADATA_KEYS.isdisjoint(metadata.keys()):
            metadata.add("authorization", f"Bearer {self._api_key}")
        timeout = details.timeout
        if timeout is None and default_deadline:
            timeout = self._deadline_seconds
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files each interceptor under the first of the four kinds it is an instance of,
# so each kind needs its own class.
class _UnaryUnary(_CallDefaults, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _TRequest],
            Awaitable[grpc.aio.UnaryUnaryCall[_TRequest, _TResponse]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _TRequest,
    ) -> grpc.aio.UnaryUnaryCall[_TRequest, _TResponse]:
        return await continuation(self.apply(client_call_details, default_deadline=True), request)


class _UnaryStream(_CallDefaults, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _TRequest],
            Awaitable[grpc.aio.UnaryStreamCall[_TRequest, _TResponse]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _TRequest,
    ) -> grpc.aio.UnaryStreamCall[_TRequest, _TResponse]:
        return await continuation(self.apply(client_call_details, default_deadline=False), request)


class _StreamUnary(_CallDefaults, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[_TRequest] | Iterable[_TRequest]],
            Awaitable[grpc.aio.StreamUnaryCall[_TRequest, _TResponse]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[_TRequest] | Iterable[_TRequest],
    ) -> grpc.aio.StreamUnaryCall[_TRequest, _TResponse]:
        return await continuation(
            self.apply(client_call_details, default_deadline=True), request_iterator
        )


class _StreamStream(_CallDefaults, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[_TRequest] | Iterable[_TRequest]],
            Awaitable[grpc.aio.StreamStreamCall[_TRequest, _TResponse]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[_TRequest] | Iterable[_TRequest],
    ) -> grpc.aio.StreamStreamCall[_TRequest, _TResponse]:
        return await continuation(
            self.apply(client_call_details, default_deadline=False), request_iterator
        )


def create_channel(
    target: str,
    *,
    api_key: str | None,
    deadline_seconds: float,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` ("host:port"); TLS when `credentials` are given.

    Close it with `await channel.close()` (or use it as an async context manager).
    """
    if deadline_seconds <= 0:
        raise ValueError("deadline_seconds must be > 0")
    interceptors: list[grpc.aio.ClientInterceptor] = [
        kind(api_key, deadline_seconds)
        for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
    ]
    otel: list[Any] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    interceptors.extend(otel)
    if credentials is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)

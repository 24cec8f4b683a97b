"""The edge and auth interceptors, over a real grpc.aio server and channel."""

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from core_harness import (
    KEYS,
    SERVICE,
    HarnessFactory,
    LogCapture,
    Messages,
    Stubs,
    TestServicer,
    auth,
)
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from obol_core.apikeys import Scope
from obol_core.grpc_client import create_channel
from obol_core.interceptors import EdgeInterceptor
from obol_core.telemetry import configure_telemetry

GET = f"/{SERVICE}/GetItem"


def rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    status = rpc_status.from_call(err)
    assert status is not None, "no google.rpc.Status in the trailers"
    return status


def detail(status: status_pb2.Status, kind: Any) -> Any:
    found = [d for d in status.details if d.Is(kind.DESCRIPTOR)]
    assert len(found) == 1
    message = kind()
    found[0].Unpack(message)
    return message


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def items(messages: Messages, *specs: tuple[str, int]) -> AsyncIterator[Any]:
    for sku, amount in specs:
        yield messages.Item(sku=sku, amount=amount)


async def test_ok_call_and_one_log_line(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    harness = await start_server()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("caller"):
        reply = await harness.stubs.GetItem(messages.Item(sku="a", amount=3), metadata=auth("ops"))
    assert reply.amount == 3
    [line] = logs.rpc_lines(GET)
    assert line["code"] == "OK"
    assert line["level"] == "info"
    assert line["api_key"] == "ops"
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert isinstance(line["duration_ms"], float)
    assert line["service"] == "core-test"
    assert len(line["trace_id"]) == 32
    assert len(line["span_id"]) == 16
    assert "timestamp" in line


@pytest.fixture
def spans() -> InMemorySpanExporter:
    configure_telemetry("core-test", None)  # idempotent: the SDK provider, once per process
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


async def test_a_server_span_per_rpc_in_the_callers_trace(
    start_server: HarnessFactory, messages: Messages, spans: InMemorySpanExporter
) -> None:
    harness = await start_server()
    # create_channel's client interceptor sends the caller's context (traceparent).
    async with create_channel(harness.address, api_key=KEYS["ops"], deadline_seconds=5) as ch:
        with trace.get_tracer("test").start_as_current_span("caller") as caller:
            await Stubs(ch, messages).GetItem(messages.Item(sku="a", amount=3))
    calls = [s for s in server_spans(spans) if s.name == GET]
    assert len(calls) == 1
    span = calls[0]
    # Its parent is the client's span of the call, in the caller's trace.
    [client] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert client.parent is not None and span.parent is not None
    assert client.parent.span_id == caller.get_span_context().span_id
    assert span.parent.span_id == client.context.span_id
    assert span.context.trace_id == caller.get_span_context().trace_id
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": "GetItem",
        "rpc.grpc.status_code": 0,
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_span_status_marks_server_faults_not_client_mistakes(
    start_server: HarnessFactory, messages: Messages, spans: InMemorySpanExporter
) -> None:
    harness = await start_server()
    for sku in ("domain", "boom"):
        await rpc_error(harness.stubs.GetItem(messages.Item(sku=sku), metadata=auth("ops")))
    domain, boom = [s for s in server_spans(spans) if s.name == GET]
    assert domain.attributes is not None and boom.attributes is not None
    assert domain.attributes["rpc.grpc.status_code"] != 0
    assert domain.status.status_code is StatusCode.UNSET  # the client's problem
    assert boom.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert boom.status.status_code is StatusCode.ERROR
    assert [event.name for event in boom.events] == ["exception"]


async def test_health_checks_make_no_span(
    start_server: HarnessFactory, spans: InMemorySpanExporter
) -> None:
    harness = await start_server()
    async with grpc.aio.insecure_channel(harness.address) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert server_spans(spans) == []


async def test_validation_error_names_the_field(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    harness = await start_server()
    err = await rpc_error(
        harness.stubs.GetItem(messages.Item(sku="a", amount=-5), metadata=auth("ops"))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rich_status(err)
    bad_request = detail(status, error_details_pb2.BadRequest)
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [("amount", "int64.gte")]
    info = detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("VALIDATION_FAILED", "obol.dev")
    assert info.metadata["field"] == "amount"
    assert harness.servicer.calls == 0, "an invalid request must not reach the handler"
    [line] = logs.rpc_lines(GET)
    assert (line["code"], line["reason"]) == ("INVALID_ARGUMENT", "VALIDATION_FAILED")


async def test_domain_error_maps_to_code_and_error_info(
    start_server: HarnessFactory, messages: Messages
) -> None:
    harness = await start_server()
    err = await rpc_error(harness.stubs.GetItem(messages.Item(sku="domain"), metadata=auth("ops")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "sku is out of stock"
    info = detail(rich_status(err), error_details_pb2.ErrorInfo)
    assert info.reason == "OUT_OF_STOCK"
    assert dict(info.metadata) == {"sku": "domain", "left": "0"}


async def test_unexpected_exception_is_internal_and_logged_with_stack(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    harness = await start_server()
    err = await rpc_error(harness.stubs.GetItem(messages.Item(sku="boom"), metadata=auth("ops")))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error"
    assert "hunter2" not in str(rich_status(err))
    assert "hunter2" not in err.debug_error_string()
    [line] = logs.rpc_lines(GET)
    assert line["level"] == "error"
    assert "RuntimeError: password=hunter2" in line["exception"]
    assert "Traceback" in line["exception"]


async def test_handler_abort_passes_through(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    harness = await start_server()
    err = await rpc_error(harness.stubs.GetItem(messages.Item(sku="abort"), metadata=auth("ops")))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "aborted by handler")
    [line] = logs.rpc_lines(GET)
    assert line["code"] == "NOT_FOUND"


async def test_server_streaming_ok_and_error_midstream(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    harness = await start_server()
    call = harness.stubs.ListItems(messages.Item(sku="a", amount=3), metadata=auth("ops"))
    assert [r.sku async for r in call] == ["a-0", "a-1", "a-2"]

    call = harness.stubs.ListItems(messages.Item(sku="domain", amount=3), metadata=auth("ops"))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for reply in call:
            received.append(reply.sku)
    assert received == ["domain-0"]
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert detail(rich_status(info.value), error_details_pb2.ErrorInfo).reason == "OUT_OF_STOCK"
    codes = [line["code"] for line in logs.rpc_lines(f"/{SERVICE}/ListItems")]
    assert codes == ["OK", "FAILED_PRECONDITION"]


async def test_coroutine_style_streaming_handler(
    start_server: HarnessFactory, messages: Messages
) -> None:
    harness = await start_server()
    call = harness.stubs.WatchItems(messages.Item(sku="a", amount=2), metadata=auth("ops"))
    assert [r.sku async for r in call] == ["w-0", "w-1"]
    call = harness.stubs.WatchItems(messages.Item(sku="boom", amount=1), metadata=auth("ops"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.INTERNAL


async def test_client_stream_validates_every_message(
    start_server: HarnessFactory, messages: Messages
) -> None:
    harness = await start_server()
    reply = await harness.stubs.BatchItems(
        items(messages, ("a", 1), ("b", 2)), metadata=auth("ops")
    )
    assert reply.amount == 3
    err = await rpc_error(
        harness.stubs.BatchItems(items(messages, ("a", 1), ("", 2)), metadata=auth("ops"))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = detail(rich_status(err), error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["sku"]


async def test_bidi_stream_echo_validation_and_errors(
    start_server: HarnessFactory, messages: Messages
) -> None:
    harness = await start_server()
    call = harness.stubs.MeterItems(items(messages, ("a", 1), ("b", 2)), metadata=auth("ops"))
    assert [r.amount async for r in call] == [2, 4]

    call = harness.stubs.MeterItems(items(messages, ("a", 1), ("b", -2)), metadata=auth("ops"))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for reply in call:
            received.append(reply.amount)
    assert received == [2]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = detail(rich_status(info.value), error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["amount"]

    call = harness.stubs.MeterItems(items(messages, ("domain", 1)), metadata=auth("ops"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# ---- auth ----


async def test_missing_key_is_unauthenticated(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    harness = await start_server()
    # An invalid payload too: authentication is decided first.
    err = await rpc_error(harness.stubs.GetItem(messages.Item(sku="", amount=-1)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert detail(rich_status(err), error_details_pb2.ErrorInfo).reason == "INVALID_CREDENTIALS"
    assert harness.servicer.calls == 0
    [line] = logs.rpc_lines(GET)
    assert (line["code"], line["level"], line["api_key"]) == ("UNAUTHENTICATED", "warning", None)


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Bearer obol_wrong"),),
        (("x-api-key", "obol_wrong"),),
        (("authorization", "Basic b2JvbDp4"),),
    ],
)
async def test_wrong_key_is_unauthenticated(
    start_server: HarnessFactory, messages: Messages, metadata: tuple[tuple[str, str], ...]
) -> None:
    harness = await start_server()
    err = await rpc_error(harness.stubs.GetItem(messages.Item(sku="a"), metadata=metadata))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert harness.servicer.calls == 0


async def test_insufficient_scope_is_permission_denied(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    harness = await start_server()
    err = await rpc_error(harness.stubs.ChargeItem(messages.Item(sku="a"), metadata=auth("reader")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    info = detail(rich_status(err), error_details_pb2.ErrorInfo)
    assert info.reason == "INSUFFICIENT_SCOPE"
    assert dict(info.metadata) == {"required_scope": "ingest"}
    assert "reader" in err.details()
    assert harness.servicer.calls == 0
    [line] = logs.rpc_lines(f"/{SERVICE}/ChargeItem")
    assert (line["code"], line["api_key"]) == ("PERMISSION_DENIED", "reader")


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("reader", {"GetItem"}),
        ("ingestor", {"GetItem", "ChargeItem"}),
        ("ops", {"GetItem", "ChargeItem", "DeleteItem"}),
    ],
)
async def test_scope_hierarchy(
    start_server: HarnessFactory, messages: Messages, key: str, allowed: set[str]
) -> None:
    harness = await start_server()
    for method in ("GetItem", "ChargeItem", "DeleteItem"):
        call = getattr(harness.stubs, method)(messages.Item(sku="a"), metadata=auth(key))
        if method in allowed:
            assert (await call).sku == "a"
        else:
            assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED


async def test_x_api_key_header_and_streams_are_authenticated(
    start_server: HarnessFactory, messages: Messages
) -> None:
    harness = await start_server()
    reply = await harness.stubs.GetItem(
        messages.Item(sku="a"), metadata=(("x-api-key", "obol_read_secret"),)
    )
    assert reply.sku == "a"
    call = harness.stubs.ListItems(messages.Item(sku="a", amount=2))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await rpc_error(harness.stubs.BatchItems(items(messages, ("a", 1))))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_scope_overrides(start_server: HarnessFactory, messages: Messages) -> None:
    harness = await start_server(scope_overrides={"TopUpItem": Scope.INGEST})
    assert (await harness.stubs.TopUpItem(messages.Item(sku="a"), metadata=auth("ingestor"))).sku
    err = await rpc_error(harness.stubs.TopUpItem(messages.Item(sku="a"), metadata=auth("reader")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_and_reflection_need_no_key(
    start_server: HarnessFactory, logs: LogCapture
) -> None:
    harness = await start_server()
    health = health_pb2_grpc.HealthStub(harness.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert logs.rpc_lines() == [], "health checks are not logged per call"


async def test_auth_disabled_passes_through(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    from obol_core.settings import AuthMode

    harness = await start_server(auth_mode=AuthMode.DISABLED)
    assert (await harness.stubs.DeleteItem(messages.Item(sku="a"))).sku == "a"
    [line] = logs.rpc_lines(f"/{SERVICE}/DeleteItem")
    assert line["api_key"] is None


async def test_metrics_count_and_time_rpcs(messages: Messages) -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    server = grpc.aio.server(interceptors=[EdgeInterceptor(meter=meter)])
    servicer = TestServicer(messages)
    servicer.add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stubs = Stubs(channel, messages)
            await stubs.GetItem(messages.Item(sku="a"))
            await stubs.GetItem(messages.Item(sku="b"))
            await rpc_error(stubs.GetItem(messages.Item(sku="domain")))
    finally:
        await server.stop(None)
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    counts = {
        (p.attributes["method"], p.attributes["code"]): p.value
        for p in metrics["obol.rpc.server.requests"].data.data_points
    }
    assert counts == {(GET, "OK"): 2, (GET, "FAILED_PRECONDITION"): 1}
    durations = metrics["obol.rpc.server.duration"].data.data_points
    assert sum(p.count for p in durations) == 3
    assert metrics["obol.rpc.server.duration"].unit == "ms"

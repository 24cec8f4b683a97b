"""OpenTelemetry setup: traces and metrics for one service process.

RPC spans and metrics are always produced (logs carry trace ids either way); they are
exported over OTLP/gRPC only when an endpoint is configured. Postgres and Redis calls get
spans of their own only then: on the wallet's hot path a span per Redis call costs about
a tenth of the service's CPU, which is worth paying only when the spans go somewhere.
The sampler follows the standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.
Context propagates between services in W3C `traceparent` headers (the OpenTelemetry
default). gRPC spans come from the interceptors in `obol_core.grpc_server` /
`obol_core.grpc_client`.
"""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = ["configure_telemetry"]

_configured = False


def configure_telemetry(service_name: str, otlp_endpoint: str | None) -> None:
    """Install the global tracer and meter providers and instrument asyncpg and redis.

    Idempotent: OpenTelemetry's global providers can be set only once per process, so
    calls after the first are ignored.
    """
    global _configured
    if _configured:
        return
    _configured = True

    resource = Resource.create({SERVICE_NAME: service_name})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    if otlp_endpoint:
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
        )
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))

    if otlp_endpoint:
        AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
        RedisInstrumentor().instrument()

"""structlog configuration: one JSON object per line, carrying the current trace and span.

Standard-library loggers (asyncio, grpc, asyncpg, ...) are routed through the same
processors, so every line a service prints has the same shape:
`{"event": ..., "level": ..., "logger": ..., "timestamp": ..., "service": ...,
"trace_id": ..., "span_id": ...}` (the last two only while a span is active).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from .settings import LOG_LEVELS, LogFormat

__all__ = ["add_trace_context", "configure_logging"]

_HANDLER_NAME = "obol"


def add_trace_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Add the active OpenTelemetry span's ids in W3C form (32 and 16 lowercase hex)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def _add_service(service_name: str) -> Processor:
    def add_service(
        _logger: WrappedLogger, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service_name)
        return event_dict

    return add_service


def configure_logging(
    service_name: str,
    level: str = "info",
    fmt: LogFormat | str = LogFormat.JSON,
    *,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the root stdlib logger; calling it again reconfigures.

    `stream` defaults to stdout (containers collect it).
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    log_format = LogFormat(fmt) if isinstance(fmt, str) else fmt
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service_name),
        add_trace_context,
    ]
    target = stream or sys.stdout
    renderer: list[Processor]
    if log_format is LogFormat.CONSOLE:
        renderer = [structlog.dev.ConsoleRenderer(colors=target.isatty())]
    else:
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger used before configure_logging() (at import time, in
        # tests) must still pick up this configuration.
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(target)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())

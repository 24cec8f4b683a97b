import io
import json
import logging

import pytest
import structlog
from opentelemetry import trace

from obol_core.logging import configure_logging
from obol_core.telemetry import configure_telemetry

pytestmark = pytest.mark.usefixtures("restore_logging")


def test_json_lines_with_trace_context() -> None:
    configure_telemetry("core-test", None)
    stream = io.StringIO()
    configure_logging("wallet", "info", "json", stream=stream)
    log = structlog.get_logger("obol.test")
    log.info("outside", amount=5)
    with trace.get_tracer("test").start_as_current_span("work") as span:
        log.warning("inside")
        context = span.get_span_context()
    log.debug("hidden at info level")
    logging.getLogger("some.library").error("library says %s", "hi")

    outside, inside, library = (json.loads(line) for line in stream.getvalue().splitlines())
    assert outside["event"] == "outside"
    assert outside["amount"] == 5
    assert outside["level"] == "info"
    assert outside["logger"] == "obol.test"
    assert outside["service"] == "wallet"
    assert outside["timestamp"].endswith("Z")
    assert "trace_id" not in outside
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert (library["event"], library["level"], library["logger"]) == (
        "library says hi",
        "error",
        "some.library",
    )
    assert library["service"] == "wallet"


def test_exceptions_are_rendered_into_the_line() -> None:
    stream = io.StringIO()
    configure_logging("wallet", "info", "json", stream=stream)
    try:
        raise ValueError("bad")
    except ValueError:
        structlog.get_logger("obol.test").exception("failed")
    [line] = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["level"] == "error"
    assert "ValueError: bad" in line["exception"]


def test_console_format_and_reconfiguration() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("wallet", "info", "json", stream=first)
    configure_logging("wallet", "debug", "console", stream=second)
    structlog.get_logger("obol.test").debug("readable", wallet="w1")
    assert first.getvalue() == ""
    text = second.getvalue()
    assert "readable" in text
    assert "wallet=w1" in text
    assert not text.startswith("{")

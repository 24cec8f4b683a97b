"""Fixtures for obol_core's tests (helpers live in core_harness.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc.aio
import pytest
import pytest_asyncio
import structlog
from core_harness import (
    SERVICE,
    Harness,
    HarnessFactory,
    LogCapture,
    Messages,
    Stubs,
    TestServicer,
    base_settings,
    build_messages,
)

from obol_core.apikeys import Scope
from obol_core.grpc_server import ReadinessCheck, ServiceRegistration, build_server
from obol_core.logging import configure_logging
from obol_core.telemetry import configure_telemetry


@pytest.fixture(scope="session")
def messages() -> Messages:
    return build_messages()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging() after the test, so that other suites see the defaults."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def logs(restore_logging: None) -> LogCapture:
    configure_telemetry("core-test", None)
    capture = LogCapture()
    configure_logging("core-test", "debug", "json", stream=capture.stream)
    return capture


@pytest_asyncio.fixture
async def start_server(messages: Messages) -> AsyncIterator[HarnessFactory]:
    """Start the test service behind build_server; returns a Harness. Stopped at teardown."""
    started: list[Harness] = []

    async def start(
        *,
        readiness_checks: Sequence[ReadinessCheck] = (),
        on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
        scope_overrides: Mapping[str, Scope] | None = None,
        **settings_changes: Any,
    ) -> Harness:
        servicer = TestServicer(messages)
        registration = ServiceRegistration(
            SERVICE, servicer, servicer.add_to_server, dict(scope_overrides or {})
        )
        running = build_server(
            base_settings(**settings_changes),
            [registration],
            readiness_checks,
            on_shutdown=on_shutdown,
        )
        await running.start()
        address = f"127.0.0.1:{running.port}"
        channel = grpc.aio.insecure_channel(address)
        harness = Harness(running, servicer, channel, Stubs(channel, messages), address)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        await harness.channel.close()
        await harness.running.stop()

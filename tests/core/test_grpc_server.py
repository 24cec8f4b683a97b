"""The server bootstrap: health/readiness, reflection, graceful shutdown, serve()."""

import asyncio
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import grpc.aio
import pytest
from core_harness import (
    SERVICE,
    HarnessFactory,
    LogCapture,
    Messages,
    TestServicer,
    auth,
    base_settings,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from obol_core.grpc_server import (
    ReadinessCheck,
    ServiceRegistration,
    build_server,
    serve,
)
from obol_core.settings import SettingsError

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Dependency:
    """A readiness check whose outcome the test controls."""

    def __init__(self) -> None:
        self.up = True
        self.hang = False

    async def check(self) -> None:
        if self.hang:
            await asyncio.sleep(60)
        if not self.up:
            raise ConnectionRefusedError("connection refused")


async def statuses(channel: grpc.aio.Channel) -> dict[str, int]:
    stub = health_pb2_grpc.HealthStub(channel)
    result = {}
    for service in ("", "readiness", SERVICE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        result[service] = reply.status
    return result


async def wait_for(channel: grpc.aio.Channel, expected: dict[str, int]) -> None:
    deadline = time.monotonic() + 5
    while (current := await statuses(channel)) != expected:
        assert time.monotonic() < deadline, f"health stuck at {current}"
        await asyncio.sleep(0.02)


async def test_readiness_follows_dependency_checks(
    start_server: HarnessFactory, logs: LogCapture
) -> None:
    db = Dependency()
    harness = await start_server(readiness_checks=[ReadinessCheck("postgres", db.check)])
    assert await statuses(harness.channel) == {"": SERVING, "readiness": SERVING, SERVICE: SERVING}

    db.up = False
    await wait_for(harness.channel, {"": SERVING, "readiness": NOT_SERVING, SERVICE: NOT_SERVING})
    await asyncio.sleep(0.2)  # several more failing rounds
    db.up = True
    await wait_for(harness.channel, {"": SERVING, "readiness": SERVING, SERVICE: SERVING})

    events = [line for line in logs.lines() if line["logger"] == "obol.server"]
    not_ready = [line for line in events if line["event"].startswith("not ready")]
    assert len(not_ready) == 1, "a failing dependency is logged once, not every round"
    assert not_ready[0]["failed"] == {"postgres": "ConnectionRefusedError: connection refused"}
    assert [line["event"] for line in events].count("ready") == 2


async def test_not_ready_at_start_and_hanging_check_times_out(
    start_server: HarnessFactory, logs: LogCapture
) -> None:
    cache = Dependency()
    cache.hang = True
    started = time.monotonic()
    harness = await start_server(readiness_checks=[ReadinessCheck("redis", cache.check)])
    assert time.monotonic() - started < 3
    assert await statuses(harness.channel) == {
        "": SERVING,
        "readiness": NOT_SERVING,
        SERVICE: NOT_SERVING,
    }
    [line] = [line for line in logs.lines() if line["event"].startswith("not ready")]
    assert line["failed"] == {"redis": "timed out after 1s"}


async def test_reflection_lists_services(start_server: HarnessFactory) -> None:
    harness = await start_server()
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)

    async def request() -> object:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for reply in stub.ServerReflectionInfo(request()):
        names |= {s.name for s in reply.list_services_response.service}
    assert names == {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_graceful_shutdown(start_server: HarnessFactory, messages: Messages) -> None:
    events: list[str] = []

    async def close_pool() -> None:
        events.append(f"close_pool after {harness.servicer.completed} completed RPC")

    async def broken() -> None:
        raise RuntimeError("already closed")

    async def close_redis() -> None:
        events.append("close_redis")

    harness = await start_server(
        on_shutdown=[close_pool, broken, close_redis],
        shutdown_delay_seconds=0.3,
        shutdown_grace_seconds=5.0,
    )

    async def slow_call() -> object:
        return await harness.stubs.GetItem(
            messages.Item(sku="slow", amount=600), metadata=auth("ops")
        )

    in_flight = asyncio.create_task(slow_call())
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(harness.running.stop())
    await asyncio.sleep(0.1)
    # During the shutdown delay the server still answers, and says it is going away.
    assert await statuses(harness.channel) == {
        "": NOT_SERVING,
        "readiness": NOT_SERVING,
        SERVICE: NOT_SERVING,
    }
    assert not stopping.done()
    assert (await in_flight).sku == "slow", "the in-flight RPC drains"
    await stopping
    assert events == ["close_pool after 1 completed RPC", "close_redis"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stubs.GetItem(messages.Item(sku="a"), metadata=auth("ops"), timeout=1)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_serve_stops_on_sigterm(messages: Messages) -> None:
    port = free_port()
    closed = asyncio.Event()

    async def on_shutdown() -> None:
        closed.set()

    servicer = TestServicer(messages)
    task = asyncio.create_task(
        serve(
            base_settings(port=port),
            [ServiceRegistration(SERVICE, servicer, servicer.add_to_server)],
            [],
            on_shutdown=[on_shutdown],
        )
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 5)
        assert (await statuses(channel))[""] == SERVING
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 10)
    assert closed.is_set()


async def test_port_in_use_fails_clearly(caplog: pytest.LogCaptureFixture) -> None:
    # DEBUG with records kept (caplog): grpc logs a server that is dropped without having
    # been started and stopped with a reference to the dying object; this must not happen.
    caplog.set_level(logging.DEBUG)
    closed: list[str] = []

    async def close() -> None:
        closed.append("closed")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        for _ in range(5):
            running = build_server(base_settings(port=port), [], [], on_shutdown=[close])
            with pytest.raises(SettingsError, match=f"cannot listen on 127.0.0.1:{port}"):
                await running.start()
            await running.stop()
            del running
    never_started = build_server(base_settings(), [], [], on_shutdown=[close])
    await never_started.stop()
    del never_started
    gc.collect()
    assert closed == ["closed"] * 6
    assert not [r for r in caplog.records if "__dealloc__" in str(r.msg)]
    for record in caplog.records:
        record.getMessage()


def test_run_service_turns_settings_errors_into_a_clean_exit() -> None:
    # In a child process: uvloop.run() next to this process's grpc.aio state is unsafe.
    script = """
from obol_core.grpc_server import run_service
from obol_core.settings import CommonSettings

async def main() -> None:
    CommonSettings.from_env("wallet", 50051, "OBOL_WALLET_PORT")

run_service(main())
"""
    env = {**os.environ, "OBOL_WALLET_PORT": "x", "OBOL_AUTH": "disabled"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "SettingsError: OBOL_WALLET_PORT must be an integer between 1 and 65535, got 'x'"
    )


def test_repeated_stop_signals_do_not_cut_the_drain_short() -> None:
    # In a child process: it gets real signals, and a bug here would kill the test run.
    script = """
import asyncio
from obol_core.grpc_server import run_service, serve
from obol_core.logging import configure_logging
from obol_core.settings import CommonSettings

async def main() -> None:
    settings = CommonSettings.from_env("core-test", 0, "OBOL_TEST_PORT")
    configure_logging(settings.service_name, "info", settings.log_format)

    async def slow_close() -> None:
        print("closing", flush=True)
        await asyncio.sleep(1.5)
        print("closed", flush=True)

    await serve(settings, [], [], on_shutdown=[slow_close])

run_service(main())
"""
    port = free_port()
    env = {**os.environ, "OBOL_TEST_PORT": str(port), "OBOL_AUTH": "disabled"}
    env.pop("OBOL_SHUTDOWN_DELAY_SECONDS", None)
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    lines: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
    child.send_signal(signal.SIGTERM)
    for line in child.stdout:
        lines.append(line)
        if line.strip() == "closing":
            break
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        child.send_signal(sig)
    lines.extend(child.stdout)
    assert child.wait(timeout=30) == 0, "".join(lines)
    output = "".join(lines)
    assert "closed\n" in output, output
    assert "stop signal ignored: already stopping" in output, output
    assert "server stopped" in output

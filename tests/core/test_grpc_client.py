"""create_channel: API key, default deadlines, trace propagation."""

import asyncio
import time

import grpc
import grpc.aio
import pytest
from core_harness import KEYS, SERVICE, HarnessFactory, LogCapture, Messages, Stubs
from opentelemetry import trace

from obol_core.grpc_client import create_channel


async def test_channel_sends_the_api_key(start_server: HarnessFactory, messages: Messages) -> None:
    harness = await start_server()
    async with create_channel(
        harness.address, api_key=KEYS["ingestor"], deadline_seconds=5
    ) as channel:
        stubs = Stubs(channel, messages)
        assert (await stubs.ChargeItem(messages.Item(sku="a"))).sku == "a"
        # Credentials the caller sets itself win over the channel's.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs.GetItem(messages.Item(sku="a"), metadata=(("x-api-key", "obol_nope"),))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with create_channel(harness.address, api_key=None, deadline_seconds=5) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await Stubs(channel, messages).GetItem(messages.Item(sku="a"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_default_deadline_applies_to_unary_calls(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    harness = await start_server()
    async with create_channel(harness.address, api_key=KEYS["ops"], deadline_seconds=0.2) as ch:
        stubs = Stubs(ch, messages)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs.GetItem(messages.Item(sku="slow", amount=2000))
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 1.5
        # The server gives up on the handler too, and says why.
        for _ in range(100):
            if logs.rpc_lines(f"/{SERVICE}/GetItem"):
                break
            await asyncio.sleep(0.01)
        [line] = logs.rpc_lines(f"/{SERVICE}/GetItem")
        assert line["code"] == "DEADLINE_EXCEEDED"

        # An explicit timeout is kept.
        reply = await stubs.GetItem(messages.Item(sku="slow", amount=400), timeout=5)
        assert reply.sku == "slow"

        async def requests():  # type: ignore[no-untyped-def]
            yield messages.Item(sku="slow", amount=2000)

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs.BatchItems(requests())
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_response_streams_get_no_default_deadline(
    start_server: HarnessFactory, messages: Messages
) -> None:
    harness = await start_server()
    async with create_channel(harness.address, api_key=KEYS["ops"], deadline_seconds=0.2) as ch:
        # 300 items, with a 300 ms pause after the first: longer than the 0.2 s default.
        call = Stubs(ch, messages).ListItems(messages.Item(sku="slow", amount=300))
        replies = [reply.sku async for reply in call]
        assert len(replies) == 300


async def test_trace_context_propagates_to_the_server(
    start_server: HarnessFactory, messages: Messages, logs: LogCapture
) -> None:
    harness = await start_server()
    tracer = trace.get_tracer("test")
    async with create_channel(harness.address, api_key=KEYS["ops"], deadline_seconds=5) as ch:
        with tracer.start_as_current_span("caller") as span:
            await Stubs(ch, messages).GetItem(messages.Item(sku="a"))
            trace_id = format(span.get_span_context().trace_id, "032x")
    [line] = logs.rpc_lines(f"/{SERVICE}/GetItem")
    assert line["trace_id"] == trace_id

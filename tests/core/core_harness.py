"""Helpers for obol_core's tests: protovalidate-annotated test messages built at run time
(no generated Obol protos needed), a test gRPC service exercising every RPC kind, settings,
and in-memory log capture. The fixtures using them are in conftest.py."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import grpc.aio
from buf.validate import validate_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from obol_core.apikeys import ApiKey, Scope, hash_api_key
from obol_core.errors import FailedPrecondition
from obol_core.grpc_server import RunningServer
from obol_core.settings import AuthMode, CommonSettings, LogFormat

SERVICE = "obolcoretest.v1.TestService"
KEYS = {"reader": "obol_read_secret", "ingestor": "obol_ingest_secret", "ops": "obol_admin_secret"}
_SCOPES = {"reader": Scope.READ, "ingestor": Scope.INGEST, "ops": Scope.ADMIN}

_F = descriptor_pb2.FieldDescriptorProto


@dataclass(frozen=True)
class Messages:
    Item: Any
    Order: Any


def build_messages() -> Messages:
    pool = descriptor_pool.Default()
    try:
        item = pool.FindMessageTypeByName("obolcoretest.v1.Item")
    except KeyError:
        pool.Add(_test_file())
        item = pool.FindMessageTypeByName("obolcoretest.v1.Item")
    order = pool.FindMessageTypeByName("obolcoretest.v1.Order")
    return Messages(message_factory.GetMessageClass(item), message_factory.GetMessageClass(order))


def _test_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="obolcoretest/v1/test.proto",
        package="obolcoretest.v1",
        syntax="proto3",
        dependency=["buf/validate/validate.proto"],
    )
    item = file.message_type.add(name="Item")
    sku = item.field.add(name="sku", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    sku.options.Extensions[validate_pb2.field].string.min_len = 1
    amount = item.field.add(name="amount", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_INT64)
    amount.options.Extensions[validate_pb2.field].int64.gte = 0

    order = file.message_type.add(name="Order")
    item_type = ".obolcoretest.v1.Item"
    for number, (name, entry) in enumerate(
        [("items", None), ("by_asset", "ByAssetEntry"), ("by_tier", "ByTierEntry")], start=1
    ):
        order.field.add(
            name=name,
            number=number,
            label=_F.LABEL_REPEATED,
            type=_F.TYPE_MESSAGE,
            type_name=f".obolcoretest.v1.Order.{entry}" if entry else item_type,
        )
    order.field.add(
        name="total", number=4, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE, type_name=item_type
    )
    for entry_name, key_type in (("ByAssetEntry", _F.TYPE_STRING), ("ByTierEntry", _F.TYPE_INT32)):
        entry = order.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=key_type)
        entry.field.add(
            name="value",
            number=2,
            label=_F.LABEL_OPTIONAL,
            type=_F.TYPE_MESSAGE,
            type_name=item_type,
        )
    return file


class OutOfStock(FailedPrecondition):
    reason = "OUT_OF_STOCK"


class TestServicer:
    """Behaviour is chosen by the request's sku: "domain" raises an ObolError, "boom" an
    unexpected exception, "abort" aborts through the context, "slow" sleeps `amount` ms."""

    __test__ = False

    def __init__(self, messages: Messages) -> None:
        self.Item = messages.Item
        self.calls = 0
        self.completed = 0

    async def _act(self, item: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.calls += 1
        if item.sku == "domain":
            raise OutOfStock("sku is out of stock", metadata={"sku": item.sku, "left": 0})
        if item.sku == "boom":
            raise RuntimeError("password=hunter2 host=db.internal")
        if item.sku == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "aborted by handler")
        if item.sku == "slow":
            await asyncio.sleep(item.amount / 1000)

    async def unary(self, item: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self._act(item, context)
        self.completed += 1
        return self.Item(sku=item.sku, amount=item.amount)

    async def list_items(
        self, item: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        self.calls += 1
        for index in range(item.amount):
            if index == 1:
                await self._act(item, context)
            yield self.Item(sku=f"{item.sku}-{index}", amount=index)

    async def watch_items(self, item: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Coroutine-style streaming handler (context.write)."""
        self.calls += 1
        for index in range(item.amount):
            await context.write(self.Item(sku=f"w-{index}", amount=index))
        await self._act(item, context)

    async def batch_items(
        self, items: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        self.calls += 1
        total = 0
        async for item in items:
            await self._act(item, context)
            total += item.amount
        return self.Item(sku="total", amount=total)

    async def meter_items(
        self, items: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        self.calls += 1
        async for item in items:
            await self._act(item, context)
            yield self.Item(sku=item.sku, amount=item.amount * 2)

    def add_to_server(self, _servicer: Any, server: grpc.aio.Server) -> None:
        ser, de = self.Item.SerializeToString, self.Item.FromString
        handlers = {
            "GetItem": grpc.unary_unary_rpc_method_handler(self.unary, de, ser),
            "ChargeItem": grpc.unary_unary_rpc_method_handler(self.unary, de, ser),
            "DeleteItem": grpc.unary_unary_rpc_method_handler(self.unary, de, ser),
            "TopUpItem": grpc.unary_unary_rpc_method_handler(self.unary, de, ser),
            "ListItems": grpc.unary_stream_rpc_method_handler(self.list_items, de, ser),
            "WatchItems": grpc.unary_stream_rpc_method_handler(self.watch_items, de, ser),
            "BatchItems": grpc.stream_unary_rpc_method_handler(self.batch_items, de, ser),
            "MeterItems": grpc.stream_stream_rpc_method_handler(self.meter_items, de, ser),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


class Stubs:
    """Callables for every TestService method on one channel."""

    def __init__(self, channel: grpc.aio.Channel, messages: Messages) -> None:
        ser, de = messages.Item.SerializeToString, messages.Item.FromString
        unary = {"GetItem", "ChargeItem", "DeleteItem", "TopUpItem"}
        for name in unary:
            setattr(self, name, channel.unary_unary(f"/{SERVICE}/{name}", ser, de))
        self.ListItems = channel.unary_stream(f"/{SERVICE}/ListItems", ser, de)
        self.WatchItems = channel.unary_stream(f"/{SERVICE}/WatchItems", ser, de)
        self.BatchItems = channel.stream_unary(f"/{SERVICE}/BatchItems", ser, de)
        self.MeterItems = channel.stream_stream(f"/{SERVICE}/MeterItems", ser, de)

    GetItem: Any
    ChargeItem: Any
    DeleteItem: Any
    TopUpItem: Any


def base_settings(**changes: Any) -> CommonSettings:
    settings = CommonSettings(
        service_name="core-test",
        host="127.0.0.1",
        port=0,
        database_url=None,
        redis_url=None,
        redis_cluster=False,
        api_keys=tuple(ApiKey(n, _SCOPES[n], hash_api_key(k)) for n, k in KEYS.items()),
        auth_mode=AuthMode.REQUIRED,
        log_level="info",
        log_format=LogFormat.JSON,
        otlp_endpoint=None,
        shutdown_grace_seconds=2.0,
        shutdown_delay_seconds=0.0,
        client_deadline_seconds=5.0,
        readiness_interval_seconds=0.05,
    )
    return replace(settings, **changes)


@dataclass
class Harness:
    running: RunningServer
    servicer: TestServicer
    channel: grpc.aio.Channel
    stubs: Stubs
    address: str


@dataclass
class LogCapture:
    """JSON log lines written through obol_core.logging into memory."""

    stream: io.StringIO = field(default_factory=io.StringIO)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def rpc_lines(self, method: str | None = None) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines()
            if line.get("event") == "rpc" and (method is None or line["method"] == method)
        ]

    def clear(self) -> None:
        self.stream.seek(0)
        self.stream.truncate()


def auth(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {KEYS[name]}"),)


HarnessFactory = Callable[..., Awaitable[Harness]]

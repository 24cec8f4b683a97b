"""An in-process wallet service over a real gRPC channel, on either backend.

The server is the production bootstrap (interceptors, validation, error mapping) on port
0; storage is the session's real Postgres (a fresh database per test) and Redis. The clock
is controllable so expiry can be tested without sleeping.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

import asyncpg
import grpc.aio
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from obol_core.grpc_server import ServiceRegistration, build_server
from obol_core.ids import new_ulid
from obol_core.postgres import apply_migrations, create_pool
from obol_core.redis import RedisClient, ReplicaAcks, create_redis, is_cluster_url
from obol_core.settings import CommonSettings
from obol_wallet.auto_top_up import AutoTopUpWorker
from obol_wallet.backend import WalletBackend
from obol_wallet.core import WalletCore
from obol_wallet.payments import SandboxPaymentProvider
from obol_wallet.pg_backend import PostgresBackend
from obol_wallet.redis_backend import RedisBackend
from obol_wallet.schema import MIGRATIONS_DIR, SCHEMA
from obol_wallet.service import SERVICE_NAME, WalletService
from obol_wallet.writebehind import WriteBehind

_Detail = TypeVar("_Detail", bound=Message)

PARTITIONS = 16
START_MS = 1_800_000_000_000
USD = "USD"


class FakeClock:
    def __init__(self, now_ms: int = START_MS) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class WalletApi:
    stub: wallet_pb2_grpc.WalletServiceStub
    clock: FakeClock
    pool: asyncpg.Pool[asyncpg.Record]
    backend: WalletBackend
    backend_name: str
    redis: RedisClient
    target: str  # host:port of the in-process server
    payments: SandboxPaymentProvider = field(default_factory=SandboxPaymentProvider)

    async def run_top_ups(self) -> int:
        """One round of the auto top-up worker, paying through `payments`."""
        worker = AutoTopUpWorker(
            self.pool, self.backend, self.payments, self.clock, consumer="test"
        )
        return await worker.run_once()

    async def drain_ledger(self) -> None:
        """Write everything the Redis backend has streamed into Postgres (no-op otherwise)."""
        if self.backend_name == "redis":
            worker = WriteBehind(self.redis, self.pool, range(PARTITIONS), consumer="test")
            await worker.drain()

    async def customer(self) -> str:
        external = f"cust-{new_ulid()}"
        reply = await self.stub.CreateCustomer(
            wallet_pb2.CreateCustomerRequest(
                request_id=f"c-{external}", customer=wallet_pb2.Customer(external_id=external)
            )
        )
        return reply.customer.customer_id

    async def wallet(self, funds: int = 0, *, overdraft: int = 0) -> str:
        """A fresh USD wallet of a fresh customer, topped up with `funds` nanos."""
        customer_id = await self.customer()
        created = await self.stub.CreateWallet(
            wallet_pb2.CreateWalletRequest(
                request_id=f"w-{customer_id}",
                customer_id=customer_id,
                asset_code=USD,
                overdraft_limit=usd(overdraft),
            )
        )
        wallet_id = created.wallet.wallet_id
        if funds:
            await self.stub.TopUp(
                wallet_pb2.TopUpRequest(
                    request_id=f"t-{wallet_id}",
                    wallet=wallet_pb2.WalletSelector(wallet_id=wallet_id),
                    amount=usd(funds),
                    payment_reference="pay-test",
                )
            )
        return wallet_id

    async def available(self, wallet_id: str) -> int:
        reply = await self.stub.GetWallet(
            wallet_pb2.GetWalletRequest(wallet=wallet_pb2.WalletSelector(wallet_id=wallet_id))
        )
        return reply.wallet.available.amount


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(asset_code=USD, amount=amount)


def selector(wallet_id: str) -> wallet_pb2.WalletSelector:
    return wallet_pb2.WalletSelector(wallet_id=wallet_id)


def _details(err: grpc.aio.AioRpcError) -> list[object]:
    status = rpc_status.from_call(err)
    assert status is not None, f"no rich status in {err}"
    return list(status.details)


def _unpacked(err: grpc.aio.AioRpcError, kind: type[_Detail]) -> list[_Detail]:
    found = []
    for detail in _details(err):
        message = kind()
        if detail.Unpack(message):  # type: ignore[attr-defined]
            found.append(message)
    return found


def reason_of(err: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and metadata of a refused RPC."""
    infos = _unpacked(err, error_details_pb2.ErrorInfo)
    assert infos, f"no ErrorInfo in {err}"
    return infos[0].reason, dict(infos[0].metadata)


def field_violations(err: grpc.aio.AioRpcError) -> list[str]:
    """The fields a refusal's BadRequest names."""
    return [
        v.field
        for bad in _unpacked(err, error_details_pb2.BadRequest)
        for v in bad.field_violations
    ]


def reason_and_fields(err: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    return reason_of(err)[0], field_violations(err)


def retry_info(err: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo | None:
    """The refusal's RetryInfo, if it came with one."""
    retries = _unpacked(err, error_details_pb2.RetryInfo)
    return retries[0] if retries else None


def _settings() -> CommonSettings:
    base = CommonSettings.from_env(
        "wallet-test",
        50051,
        "OBOL_WALLET_PORT",
        environ={"OBOL_AUTH": "disabled", "OBOL_HOST": "127.0.0.1"},
    )
    return replace(base, port=0)


_databases = itertools.count()


def private_redis_url(redis_url: str) -> str:
    """A Redis logical database of its own (1-15, flushed), so a write-behind drain sees
    only this test's streams. A Redis Cluster has database 0 only: its URL is kept as it
    is (the cluster must then be the test's alone, since it is flushed too)."""
    if is_cluster_url(redis_url):
        return redis_url
    base = redis_url.rsplit("/", 1)[0]
    return f"{base}/{next(_databases) % 15 + 1}"


@asynccontextmanager
async def wallet_api(
    backend_name: str,
    database_url: str,
    redis_url: str,
    *,
    replica_acks: ReplicaAcks | None = None,
    flush_redis: bool = True,
) -> AsyncIterator[WalletApi]:
    """A wallet service in this process on `redis_url` (flushed first unless `flush_redis`
    is false: for a new Redis of the test's own, whose user may not FLUSHDB)."""
    pool = await create_pool(database_url, search_path=SCHEMA, max_size=40)
    await apply_migrations(pool, schema=SCHEMA, migrations=MIGRATIONS_DIR)
    redis = create_redis(private_redis_url(redis_url))
    if flush_redis:
        await redis.flushdb()
    backend: WalletBackend
    if backend_name == "postgres":
        backend = PostgresBackend(pool)
    else:
        backend = RedisBackend(redis, partitions=PARTITIONS, replica_acks=replica_acks)
    clock = FakeClock()
    core = WalletCore(pool, backend, clock, partitions=PARTITIONS, default_hold_ttl_ms=60_000)
    server = build_server(
        _settings(),
        [
            ServiceRegistration(
                SERVICE_NAME,
                WalletService(pool, core),
                wallet_pb2_grpc.add_WalletServiceServicer_to_server,
            )
        ],
        [],
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        await stub.CreateAsset(
            wallet_pb2.CreateAssetRequest(
                request_id="asset-usd",
                asset=wallet_pb2.Asset(
                    asset_code=USD,
                    kind=wallet_pb2.ASSET_KIND_CURRENCY,
                    decimals=9,
                    display_decimals=2,
                    display_name="US dollar",
                    symbol="$",
                ),
            )
        )
        yield WalletApi(stub, clock, pool, backend, backend_name, redis, f"127.0.0.1:{server.port}")
    finally:
        await channel.close()
        await server.stop()
        await redis.aclose()
        await pool.close()

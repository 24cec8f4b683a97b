"""The gRPC load of one client process: closed-loop pairs, batches, open-loop authorizes.

Each process has one grpc.aio channel (HTTP/2 multiplexes its coroutines' calls). Every
loop is bounded twice: by the window's end and by a count.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from .config import AMOUNT, ASSET, HOLD_TTL_SECONDS
from .jobs import BatchJob, JobResult, OpenLoopJob, PairsJob, Target, WarmJob

MAX_LOOPS = 10_000_000  # per coroutine; the window's end comes first
CALL_TIMEOUT = 10.0
BATCH_TIMEOUT = 60.0
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

Metadata = tuple[tuple[str, str], ...]


def _channel(target: Target) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target.address,
        options=[("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 64 << 20)],
    )


def _metadata(target: Target) -> Metadata:
    return (("authorization", f"Bearer {target.api_key}"),)


def _reason(details: list[object]) -> str:
    for detail in details:
        info = error_details_pb2.ErrorInfo()
        if hasattr(detail, "Unpack") and detail.Unpack(info):
            return str(info.reason)
    return ""


def error_key(err: grpc.aio.AioRpcError) -> str:
    """`CODE` or `CODE/REASON` (the ErrorInfo reason of Obol's rich status)."""
    reason = ""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            reason = _reason(list(status.details))
    return f"{err.code().name}/{reason}" if reason else err.code().name


def status_key(status: status_pb2.Status) -> str:
    name = _CODE_NAMES.get(status.code, str(status.code))
    reason = _reason(list(status.details))
    return f"{name}/{reason}" if reason else name


def _money() -> money_pb2.Money:
    return money_pb2.Money(asset_code=ASSET, amount=AMOUNT)


def authorize_request(request_id: str, wallet_id: str) -> wallet_pb2.AuthorizeRequest:
    return wallet_pb2.AuthorizeRequest(
        request_id=request_id,
        wallet=wallet_pb2.WalletSelector(wallet_id=wallet_id),
        amount=_money(),
        ttl=Duration(seconds=HOLD_TTL_SECONDS),
    )


async def _connect(channel: grpc.aio.Channel) -> None:
    await asyncio.wait_for(channel.channel_ready(), timeout=30)


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_pairs(job: PairsJob) -> JobResult:
    result = JobResult()
    window = job.window
    metadata = _metadata(job.target)
    async with _channel(job.target) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        await _connect(channel)

        async def client(index: int) -> None:
            rng = random.Random(f"{job.tag}-{index}")
            wallets = job.wallet_ids
            for n in range(MAX_LOOPS):
                if time.monotonic() >= window.measure_until:
                    return
                rid = f"{job.tag}-{index}-{n}"
                wallet_id = wallets[rng.randrange(len(wallets))]
                try:
                    held = await stub.Authorize(
                        authorize_request(f"{rid}a", wallet_id),
                        metadata=metadata,
                        timeout=CALL_TIMEOUT,
                    )
                    await stub.Capture(
                        wallet_pb2.CaptureRequest(
                            request_id=f"{rid}c", hold_id=held.hold_id, amount=_money()
                        ),
                        metadata=metadata,
                        timeout=CALL_TIMEOUT,
                    )
                except grpc.aio.AioRpcError as err:
                    if window.counts(time.monotonic()):
                        result.failed += 1
                        result.errors[error_key(err)] += 1
                    continue
                if window.counts(time.monotonic()):
                    result.ok += 1
                    result.calls += 2
                    if job.collect_ids:
                        result.request_ids += [f"{rid}a", f"{rid}c"]

        await _sleep_until(window.start_at)
        await asyncio.gather(*(client(i) for i in range(job.clients)))
    return result


async def run_batches(job: BatchJob) -> JobResult:
    result = JobResult()
    window = job.window
    metadata = _metadata(job.target)
    async with _channel(job.target) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        await _connect(channel)

        async def sender(index: int) -> None:
            rng = random.Random(f"{job.tag}-{index}")
            wallets = job.wallet_ids
            for n in range(MAX_LOOPS):
                if time.monotonic() >= window.measure_until:
                    return
                request = wallet_pb2.BatchAuthorizeRequest(
                    items=[
                        authorize_request(
                            f"{job.tag}-{index}-{n}-{k}", wallets[rng.randrange(len(wallets))]
                        )
                        for k in range(job.batch_size)
                    ]
                )
                try:
                    reply = await stub.BatchAuthorize(
                        request, metadata=metadata, timeout=BATCH_TIMEOUT
                    )
                except grpc.aio.AioRpcError as err:
                    if window.counts(time.monotonic()):
                        result.failed += job.batch_size
                        result.errors[error_key(err)] += job.batch_size
                    continue
                if not window.counts(time.monotonic()):
                    continue
                result.calls += 1
                for item in reply.results:
                    if item.WhichOneof("outcome") == "response":
                        result.ok += 1
                    else:
                        result.failed += 1
                        result.errors[status_key(item.error)] += 1

        await _sleep_until(window.start_at)
        await asyncio.gather(*(sender(i) for i in range(job.in_flight)))
    return result


async def run_open_loop(job: OpenLoopJob) -> JobResult:
    result = JobResult()
    metadata = _metadata(job.target)
    count = int(job.duration * job.rate)
    interval = 1.0 / job.rate
    async with _channel(job.target) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await _connect(channel)
        rng = random.Random(job.tag)
        outstanding: set[asyncio.Task[None]] = set()

        async def call(i: int) -> None:
            if job.health_check:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=job.timeout)
                return
            wallet_id = job.wallet_ids[rng.randrange(len(job.wallet_ids))]
            await stub.Authorize(
                authorize_request(f"{job.tag}-{i}", wallet_id),
                metadata=metadata,
                timeout=job.timeout,
            )

        async def send(i: int, scheduled: float) -> None:
            try:
                await call(i)
            except grpc.aio.AioRpcError as err:
                result.failed += 1
                result.errors[error_key(err)] += 1
                return
            result.ok += 1
            result.latencies_ms.append((time.monotonic() - scheduled) * 1000.0)

        first = job.start_at + job.offset
        for i in range(count):
            scheduled = first + i * interval
            now = time.monotonic()
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
                now = time.monotonic()  # the event loop's timers wake up to ~1 ms late
            result.send_late_max_ms = max(result.send_late_max_ms, (now - scheduled) * 1000)
            if len(outstanding) >= job.max_outstanding:
                result.dropped += 1
                continue
            task = asyncio.create_task(send(i, scheduled))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
        if outstanding:
            await asyncio.wait(outstanding, timeout=job.timeout + 5)
        result.calls = result.ok + result.failed
    return result


async def run_warm(job: WarmJob) -> JobResult:
    result = JobResult()
    metadata = _metadata(job.target)
    async with _channel(job.target) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        await _connect(channel)
        queue = list(job.wallet_ids)

        async def worker() -> None:
            while queue:
                wallet_id = queue.pop()
                try:
                    await stub.GetWallet(
                        wallet_pb2.GetWalletRequest(
                            wallet=wallet_pb2.WalletSelector(wallet_id=wallet_id)
                        ),
                        metadata=metadata,
                        timeout=CALL_TIMEOUT,
                    )
                    result.ok += 1
                except grpc.aio.AioRpcError as err:
                    result.failed += 1
                    result.errors[error_key(err)] += 1

        await asyncio.gather(*(worker() for _ in range(job.concurrency)))
    return result


def errors_text(errors: Counter[str]) -> str:
    return ", ".join(f"{key} x{count}" for key, count in errors.most_common(4))

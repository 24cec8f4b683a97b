"""`python -m bench.fake_wallet`: the dry run's stand-in wallet service.

It answers the RPCs the bench sends (Authorize, Capture, BatchAuthorize, GetWallet) from
memory, accepting any wallet id, and serves health like the real one; it exists only to
exercise the bench's own machinery (processes, load, timing, report) without the wallet
backends. Its figures mean nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from obol.type.v1 import money_pb2
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from obol_core.ids import new_ulid


class FakeWallet(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self) -> None:
        self._holds: dict[str, int] = {}

    def _authorize(self, request: wallet_pb2.AuthorizeRequest) -> wallet_pb2.AuthorizeResponse:
        hold_id = f"hld_{new_ulid()}"
        self._holds[hold_id] = request.amount.amount
        return wallet_pb2.AuthorizeResponse(
            hold_id=hold_id, held=request.amount, wallet_id=request.wallet.wallet_id
        )

    async def Authorize(  # noqa: N802
        self,
        request: wallet_pb2.AuthorizeRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> wallet_pb2.AuthorizeResponse:
        return self._authorize(request)

    async def Capture(  # noqa: N802
        self, request: wallet_pb2.CaptureRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> wallet_pb2.CaptureResponse:
        self._holds.pop(request.hold_id, None)
        return wallet_pb2.CaptureResponse(hold_id=request.hold_id)

    async def BatchAuthorize(  # noqa: N802
        self,
        request: wallet_pb2.BatchAuthorizeRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> wallet_pb2.BatchAuthorizeResponse:
        response = wallet_pb2.BatchAuthorizeResponse()
        for item in request.items:
            response.results.add(response=self._authorize(item))
        return response

    async def GetWallet(  # noqa: N802
        self,
        request: wallet_pb2.GetWalletRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> wallet_pb2.GetWalletResponse:
        return wallet_pb2.GetWalletResponse(
            wallet=wallet_pb2.Wallet(
                wallet_id=request.wallet.wallet_id,
                available=money_pb2.Money(asset_code="USD", amount=10**12),
            )
        )


async def main() -> None:
    server = grpc.aio.server()
    servicer = FakeWallet()  # type: ignore[abstract]  # the rest: UNIMPLEMENTED
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    address = f"{os.environ.get('OBOL_HOST', '127.0.0.1')}:{os.environ['OBOL_WALLET_PORT']}"
    server.add_insecure_port(address)
    await server.start()
    await checks.set("readiness", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(main())

"""`python -m obol_wallet`: run the wallet service (gRPC, default port 50051)."""

from __future__ import annotations

from collections.abc import Sequence

from obol.wallet.v1 import wallet_pb2_grpc

from obol_core.grpc_server import ServiceRegistration
from obol_core.service_main import Resources, ServiceSpec, launch

from .schema import MIGRATIONS_DIR, SCHEMA
from .service import SERVICE_NAME, WalletService


def _services(resources: Resources) -> Sequence[ServiceRegistration]:
    return [
        ServiceRegistration(
            SERVICE_NAME,
            WalletService(resources.pool),  # type: ignore[abstract]  # other RPCs: UNIMPLEMENTED for now
            wallet_pb2_grpc.add_WalletServiceServicer_to_server,
        )
    ]


SPEC = ServiceSpec(
    name="wallet",
    default_port=50051,
    port_variable="OBOL_WALLET_PORT",
    schema=SCHEMA,
    migrations=MIGRATIONS_DIR,
    build=_services,
    uses_redis=True,
)

if __name__ == "__main__":
    launch(SPEC)

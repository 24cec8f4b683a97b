"""`python -m obol_costs`: run the costs service (gRPC, default port 50053)."""

from __future__ import annotations

from obol.costs.v1 import costs_pb2_grpc

from obol_core.grpc_server import ServiceRegistration
from obol_core.service_main import Resources, ServicePlan, ServiceSpec, launch

from .list_prices import list_prices_card
from .schema import MIGRATIONS_DIR, SCHEMA
from .service import SERVICE_NAME, CostsService


def _services(resources: Resources) -> ServicePlan:
    list_prices_card()  # parse the list prices before the port opens, not on the first call
    return ServicePlan(
        [
            ServiceRegistration(
                SERVICE_NAME,
                CostsService(),  # type: ignore[abstract]  # rest: UNIMPLEMENTED
                costs_pb2_grpc.add_CostsServiceServicer_to_server,
            )
        ]
    )


SPEC = ServiceSpec(
    name="costs",
    default_port=50053,
    port_variable="OBOL_COSTS_PORT",
    schema=SCHEMA,
    migrations=MIGRATIONS_DIR,
    build=_services,
)

if __name__ == "__main__":
    launch(SPEC)

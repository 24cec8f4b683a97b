"""`python -m obol_pricing`: run the pricing service (gRPC, default port 50052)."""

from __future__ import annotations

from obol.pricing.v1 import pricing_pb2_grpc

from obol_core.grpc_server import ServiceRegistration
from obol_core.service_main import Resources, ServicePlan, ServiceSpec, launch

from .schema import MIGRATIONS_DIR, SCHEMA
from .service import SERVICE_NAME, PricingService


def _services(resources: Resources) -> ServicePlan:
    return ServicePlan(
        [
            ServiceRegistration(
                SERVICE_NAME,
                PricingService(resources.pool),  # type: ignore[abstract]  # rest: UNIMPLEMENTED
                pricing_pb2_grpc.add_PricingServiceServicer_to_server,
            )
        ]
    )


SPEC = ServiceSpec(
    name="pricing",
    default_port=50052,
    port_variable="OBOL_PRICING_PORT",
    schema=SCHEMA,
    migrations=MIGRATIONS_DIR,
    build=_services,
)

if __name__ == "__main__":
    launch(SPEC)

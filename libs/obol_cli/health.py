"""One-shot health probes: gRPC `grpc.health.v1.Health/Check` and HTTP `GET /healthz`.

Probes go straight to the address, ignoring any HTTP(S)_PROXY in the environment.
"""

from __future__ import annotations

import http.client
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .services import Kind, ServiceDef

READINESS = "readiness"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def grpc_serving(address: str, *, service: str = READINESS, timeout: float = 1.0) -> bool:
    """True when the server at `address` reports `service` as SERVING."""
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str, *, timeout: float = 1.0) -> bool:
    """True when GET `url` answers 200."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):
        return False


def is_healthy(service: ServiceDef, address: str) -> bool:
    if service.kind is Kind.GRPC:
        return grpc_serving(address)
    return http_ok(f"http://{address}/healthz")

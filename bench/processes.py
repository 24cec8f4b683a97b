"""The processes under test: one wallet service per backend (as `obol run` starts it:
`python -m obol_wallet`, same environment builder) and the write-behind worker, on free
ports of 127.0.0.1, their logs in one file of the run's directory."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from obol_cli.embedded import free_port
from obol_cli.health import grpc_serving
from obol_cli.launcher import HOST, service_env
from obol_cli.services import SERVICES
from obol_cli.supervisor import Supervisor

from .config import BenchConfig
from .progress import say
from .storage import BenchError

REPO_ROOT = Path(__file__).resolve().parents[1]
# Dropped from the services' environment: exporting traces would measure the exporter.
_DROPPED = ("OTEL_EXPORTER_OTLP_ENDPOINT",)


@dataclass(frozen=True)
class Endpoint:
    name: str  # supervisor child name
    address: str  # 127.0.0.1:port of its gRPC (health) server


def wallet_env(
    config: BenchConfig, backend: str, *, database_url: str, redis_url: str, api_key: str
) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    ports = {service.name: free_port() for service in SERVICES}
    env = service_env(
        base,
        ports,
        database_url=database_url,
        redis_url=redis_url,
        api_key=api_key,
        api_key_name="bench",
    )
    env.update(
        {
            "OBOL_HOST": HOST,
            "OBOL_WALLET_BACKEND": backend,
            "OBOL_WALLET_PARTITIONS": str(config.partitions),
            "OBOL_LOG_LEVEL": "warning",  # a log line per RPC would be measured too
            "OBOL_LOG_FORMAT": "json",
        }
    )
    if config.dry_run:  # the stand-in service lives in this package
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def start_wallet(
    supervisor: Supervisor, name: str, env: Mapping[str, str], *, dry_run: bool
) -> Endpoint:
    module = "bench.fake_wallet" if dry_run else "obol_wallet"
    supervisor.start(name, [sys.executable, "-m", module], env)
    return Endpoint(name, f"{HOST}:{env['OBOL_WALLET_PORT']}")


def start_writebehind(supervisor: Supervisor, wallet: Mapping[str, str]) -> Endpoint:
    port = free_port()
    env = {
        **wallet,
        "OBOL_WRITEBEHIND_HEALTH_PORT": str(port),
        "OBOL_WRITEBEHIND_CONSUMER": "bench-writebehind-0",
        "OBOL_WRITEBEHIND_SHARDS": "1",
        "OBOL_WRITEBEHIND_SHARD_INDEX": "0",
    }
    supervisor.start("writebehind", [sys.executable, "-m", "obol_wallet.writebehind"], env)
    return Endpoint("writebehind", f"{HOST}:{port}")


def wait_healthy(supervisor: Supervisor, endpoints: list[Endpoint], timeout: float) -> None:
    """Until every endpoint answers readiness SERVING; BenchError with the log tail if one
    exits or the timeout passes."""
    started = time.monotonic()
    pending = list(endpoints)
    while pending:
        for endpoint in list(pending):
            child = supervisor[endpoint.name]
            if child.returncode is not None:
                raise BenchError(
                    f"{endpoint.name} exited with code {child.returncode} during start-up:\n"
                    + "\n".join(child.tail())
                )
            if grpc_serving(endpoint.address):
                elapsed = time.monotonic() - started
                say(f"{endpoint.name} is ready at {endpoint.address} ({elapsed:.1f}s)")
                pending.remove(endpoint)
        if pending and time.monotonic() - started > timeout:
            late = pending[0]
            raise BenchError(
                f"{late.name} not ready at {late.address} after {timeout:.0f}s:\n"
                + "\n".join(supervisor[late.name].tail())
            )
        if pending:
            time.sleep(0.2)


def check_alive(supervisor: Supervisor) -> None:
    """BenchError if a process under test has died (its figures would be meaningless)."""
    if (child := supervisor.first_exited()) is not None:
        raise BenchError(
            f"{child.name} exited with code {child.returncode} during the run:\n"
            + "\n".join(child.tail())
        )

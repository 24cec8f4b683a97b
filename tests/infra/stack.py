"""The engine of the `stack` fixture: every Obol service as a real process.

Services run exactly as `obol run` starts them (same registry, environment and process
runner), on free ports, against a fresh database in the session's Postgres and the Redis
given, with a freshly generated admin key. Their output goes to a log file, whose tail is in
the error if a service fails to come up.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from obol_cli.embedded import EmbeddedPostgres, free_port
from obol_cli.launcher import StackInfo, launch_services, service_env
from obol_cli.services import SERVICES
from obol_cli.supervisor import Supervisor
from obol_core.apikeys import generate_api_key


@contextmanager
def running_stack(
    postgres: EmbeddedPostgres,
    redis_url: str,
    log_path: Path,
    *,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> Iterator[StackInfo]:
    """The stack on a fresh database of `postgres`, or on `database_url`; `env` is added
    to every service's environment."""
    if database_url is None:
        database_url = postgres.create_database(f"stack_{uuid.uuid4().hex[:16]}")
    api_key = generate_api_key()
    ports = {service.name: free_port() for service in SERVICES}
    service_environ = service_env(
        {**os.environ, "OBOL_LOG_FORMAT": "json", **(env or {})},
        ports,
        database_url=database_url,
        redis_url=redis_url,
        api_key=api_key,
        api_key_name="tests",
    )
    with log_path.open("w") as log, Supervisor(log, color=False) as supervisor:
        addresses = launch_services(
            supervisor, service_environ, ports, timeout=timeout, progress=supervisor.write
        )
        yield StackInfo(addresses, database_url, redis_url, api_key)

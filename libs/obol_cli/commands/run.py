"""`obol run` (what `make run` does): the whole of Obol on this machine, in the foreground.

Storage comes from DATABASE_URL / REDIS_URL when set, else from embedded servers whose data
lives in the data directory (`.data/` at the repository root, or OBOL_DATA_DIR), so it
persists between runs. The services run as child processes, their logs streamed with
their name as a prefix. Ctrl-C or SIGTERM stops the services, then Redis, then Postgres;
a service that dies stops everything with a non-zero exit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from obol_core.apikeys import generate_api_key

from ..demo import load_demo_data
from ..embedded import EmbeddedPostgres, EmbeddedRedis
from ..launcher import StackInfo, launch_services, service_env
from ..services import SERVICES, Kind, env_port, ports_from_env
from ..signals import Interrupted, StopSignals
from ..supervisor import Supervisor

DEMO_KEY_FILE = "demo-api-key"
DEMO_MARKER_FILE = "demo-data-loaded"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help="run all services with embedded Postgres and Redis (make run)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the services to become healthy (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def data_dir() -> Path:
    """OBOL_DATA_DIR, else `.data/` at the repository root (or the current directory when
    obol is not installed from a checkout)."""
    if configured := os.environ.get("OBOL_DATA_DIR", "").strip():
        return Path(configured).resolve()
    root = Path(__file__).resolve().parents[3]
    return (root if (root / "pyproject.toml").is_file() else Path.cwd()) / ".data"


def demo_api_key(directory: Path) -> str:
    """The demo admin key, generated on first use and kept (mode 0600) in the data dir."""
    path = directory / DEMO_KEY_FILE
    if path.exists() and (key := path.read_text().strip()):
        return key
    key = generate_api_key()
    staging = path.with_suffix(".tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(key + "\n")
    staging.replace(path)
    return key


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


# Width of the names in the output's left column (log prefixes and the summary).
_NAME_WIDTH = max(len(service.name) for service in SERVICES)


def run(args: argparse.Namespace) -> int:
    # Created first so all output shares its lock; entered (stopped) after the databases.
    supervisor = Supervisor(sys.stdout, label_width=_NAME_WIDTH)

    def say(message: str) -> None:
        supervisor.write(f"obol: {message}")

    directory = data_dir()
    directory.mkdir(parents=True, exist_ok=True)
    ports = ports_from_env(os.environ)
    with StopSignals(notify=say) as signals:
        try:
            return _run(args, directory, ports, supervisor, say, signals)
        except Interrupted:
            say("stopped")
            return 0


def _run(
    args: argparse.Namespace,
    directory: Path,
    ports: dict[str, int],
    supervisor: Supervisor,
    say: Callable[[str], None],
    signals: StopSignals,
) -> int:
    say(f"data directory {directory}")
    with ExitStack() as stack:
        try:
            storage: list[tuple[str, str]] = []
            if database_url := os.environ.get("DATABASE_URL", "").strip():
                say(f"using DATABASE_URL {_redacted(database_url)}")
                storage.append(("Postgres", f"{_redacted(database_url)} (DATABASE_URL)"))
            else:
                postgres = EmbeddedPostgres(
                    directory / "postgres", env_port(os.environ, "OBOL_EMBEDDED_PG_PORT", 54329)
                )
                _start(stack, postgres, say)
                database_url = postgres.url
                storage.append(("Postgres", f"{database_url} (embedded, {postgres.data_dir})"))
            if redis_url := os.environ.get("REDIS_URL", "").strip():
                say(f"using REDIS_URL {_redacted(redis_url)}")
                storage.append(("Redis", f"{_redacted(redis_url)} (REDIS_URL)"))
            else:
                redis = EmbeddedRedis(
                    directory / "redis", env_port(os.environ, "OBOL_EMBEDDED_REDIS_PORT", 63799)
                )
                _start(stack, redis, say)
                redis_url = redis.url
                storage.append(
                    (
                        "Redis",
                        f"{redis_url} (embedded, AOF appendfsync={redis.appendfsync}, "
                        f"{redis.data_dir})",
                    )
                )
            api_key = demo_api_key(directory)
            base = {"OBOL_LOG_FORMAT": "console", **os.environ}
            env = service_env(
                base, ports, database_url=database_url, redis_url=redis_url, api_key=api_key
            )
            stack.enter_context(supervisor)
            addresses = launch_services(supervisor, env, ports, timeout=args.timeout, progress=say)
            info = StackInfo(addresses, database_url, redis_url, api_key)
            marker = directory / DEMO_MARKER_FILE
            if not marker.exists():
                say("loading demo data (first run)")
                load_demo_data(info)
                marker.touch()
            supervisor.write(_summary(info, directory, storage))
            child = supervisor.wait_any()
            say(f"{child.name} exited unexpectedly (code {child.returncode}); stopping everything")
            return 1
        finally:
            signals.shutting_down()


def _start(
    stack: ExitStack, server: EmbeddedPostgres | EmbeddedRedis, say: Callable[[str], None]
) -> None:
    say(f"starting embedded {server.name} on 127.0.0.1:{server.port} ({server.data_dir})")
    started = time.monotonic()
    stack.enter_context(server)
    say(f"{server.name} is ready ({time.monotonic() - started:.1f}s)")


def _summary(info: StackInfo, directory: Path, storage: list[tuple[str, str]]) -> str:
    rows: list[tuple[str, str]] = []
    for service in SERVICES:
        address = info.addresses[service.name]
        where = f"http://{address}/" if service.kind is Kind.HTTP else address
        rows.append((service.name, f"{service.kind:<5} {where}"))
    rows += storage
    rows += [
        ("data dir", str(directory)),
        ("API key", f"{info.api_key}  (demo admin key, also in {directory / DEMO_KEY_FILE})"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = ["", "Obol is running.", ""]
    lines += [f"  {label:<{width}}  {text}" for label, text in rows]
    wallet = info.addresses["wallet"]
    lines += [
        "",
        f"Portal: {info.portal_url}",
        "Try (grpcurl, the services serve reflection):",
        f"  grpcurl -plaintext -H 'authorization: Bearer {info.api_key}' {wallet} list",
        f'  grpcurl -plaintext -d \'{{"service": "readiness"}}\' {wallet} '
        "grpc.health.v1.Health/Check",
        "",
        "Press Ctrl-C to stop everything.",
        "",
    ]
    return "\n".join(lines)

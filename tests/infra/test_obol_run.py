"""`obol run` end to end, as a process: embedded Postgres and Redis, services (fakes standing
in for the real ones, see fake_services/), logs, summary, demo key, and clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from obol_cli.embedded import free_port
from obol_cli.services import SERVICES
from obol_core.apikeys import hash_api_key

from .helpers import alive
from .obol_process import FAKES, ObolProcess, describe, leftovers, wait_no_leftovers

RUNNING = "Obol is running."
NAME_WIDTH = max(len(service.name) for service in SERVICES)


def prefix(name: str) -> str:
    """How `obol run` prefixes a child's output lines."""
    return f"{name:<{NAME_WIDTH}} | "


def summary_rows(output: str) -> list[str]:
    """The rows of the summary table printed once everything is up."""
    after = output.split(RUNNING + "\n\n", 1)[1]
    return after.split("\n\n", 1)[0].splitlines()


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    state = tmp_path / "state"
    state.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {
        "OBOL_DATA_DIR": str(tmp_path / "data"),
        "OBOL_EMBEDDED_PG_PORT": str(free_port()),
        "OBOL_EMBEDDED_REDIS_PORT": str(free_port()),
        "PYTHONPATH": str(FAKES),
        "FAKE_STATE_DIR": str(state),
    }
    env |= {s.port_env: str(free_port()) for s in SERVICES}
    return env


def ports(env: dict[str, str]) -> list[str]:
    return [v for k, v in env.items() if k.startswith("OBOL_") and k.endswith("_PORT")]


@pytest.fixture
def start_obol(tmp_path: Path, run_env: dict[str, str]) -> Iterator[type[ObolProcess]]:
    """Starts `obol`; afterwards, checks that nothing of this test is left running."""
    started: list[ObolProcess] = []

    class Tracked(ObolProcess):
        def __init__(self, args: list[str], env: dict[str, str]) -> None:
            super().__init__(args, env)
            started.append(self)

    yield Tracked
    left = wait_no_leftovers(str(tmp_path), ports(run_env))
    described = describe(left)  # before the clean-up below ends them
    for run in started:
        run.kill_everything(str(tmp_path), ports(run_env))
    assert not left, f"processes left behind: {described}"


def test_run_starts_everything_and_stops_cleanly_on_sigterm(
    run_env: dict[str, str], start_obol: type[ObolProcess]
) -> None:
    data = Path(run_env["OBOL_DATA_DIR"])
    state = Path(run_env["FAKE_STATE_DIR"])
    run = start_obol(["run"], {**run_env, "FAKE_GRANDCHILD": "1"})
    run.wait_for(RUNNING)

    wallet_port = run_env["OBOL_WALLET_PORT"]
    assert f"{prefix('wallet')}fake wallet listening on 127.0.0.1:{wallet_port}" in run.lines
    assert f"{prefix('portal')}fake portal listening" in run.output
    labels = [s.name for s in SERVICES] + ["Postgres", "Redis", "data dir", "API key"]
    rows = summary_rows(run.output)
    pairs = list(zip(labels, rows, strict=True))
    assert all(row[2:].startswith(label + " ") for label, row in pairs), rows
    assert f"  writebehind  grpc  127.0.0.1:{run_env['OBOL_WRITEBEHIND_HEALTH_PORT']}" in rows
    value_columns = {len(row) - len(row[2 + len(label) :].lstrip()) for label, row in pairs}
    assert len(value_columns) == 1, f"summary columns not aligned: {rows}"
    assert f"http://127.0.0.1:{run_env['OBOL_PORTAL_PORT']}/" in run.output
    assert "obol: loading demo data (first run)" in run.lines
    assert (data / "demo-data-loaded").exists()

    key_file = data / "demo-api-key"
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key in run.output
    seen = json.loads((state / "wallet.env.json").read_text())
    pg_port, redis_port = run_env["OBOL_EMBEDDED_PG_PORT"], run_env["OBOL_EMBEDDED_REDIS_PORT"]
    assert seen["DATABASE_URL"] == f"postgres://postgres@127.0.0.1:{pg_port}/obol"
    assert seen["REDIS_URL"] == f"redis://127.0.0.1:{redis_port}/0"
    assert seen["OBOL_API_KEYS"] == f"demo:admin:{hash_api_key(key)}"
    assert seen["OBOL_API_KEY"] == key
    assert seen["OBOL_COSTS_TARGET"] == f"127.0.0.1:{run_env['OBOL_COSTS_PORT']}"

    grandchildren = [int((state / f"{s.name}.grandchild").read_text()) for s in SERVICES]
    commands = [" ".join(p.cmdline()) for p in leftovers(str(data.parent), ports(run_env))]
    assert sum("postgres" in c for c in commands) > 3  # postmaster and its workers
    assert sum("redis-server" in c for c in commands) == 1
    assert sum("-m obol_" in c for c in commands) == 1 + len(SERVICES)  # obol and each service
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    assert "obol: SIGTERM received; stopping" in run.lines
    assert f"{prefix('wallet')}fake wallet got SIGTERM" in run.lines
    assert not any(alive(pid) for pid in grandchildren)

    # Second run on the same data: same key, no demo data reload; Ctrl-C stops it.
    again = start_obol(["run"], run_env)
    again.wait_for(RUNNING)
    assert key in again.output
    assert "loading demo data" not in again.output
    again.signal(signal.SIGINT)
    assert again.wait() == 0


def test_run_leaves_nothing_behind_when_killed(
    run_env: dict[str, str], start_obol: type[ObolProcess]
) -> None:
    run = start_obol(["run"], run_env)
    run.wait_for(RUNNING)
    assert len(leftovers(str(Path(run_env["OBOL_DATA_DIR"]).parent), ports(run_env))) > 8
    run.process.kill()  # no chance to clean up: the children's parent-death signals must
    run.wait()


def test_run_fails_clearly_when_a_service_cannot_start(
    run_env: dict[str, str], start_obol: type[ObolProcess]
) -> None:
    run = start_obol(["run"], {**run_env, "FAKE_FAIL": "costs"})
    assert run.wait(timeout=60) == 1
    assert "obol: error: costs exited with code 3 during start-up" in run.output
    assert "costs: boom, cannot start" in run.output.split("obol: error:")[1]
    assert RUNNING not in run.output


def test_run_uses_external_storage_and_stops_when_a_service_dies(
    run_env: dict[str, str],
    start_obol: type[ObolProcess],
    postgres_url: str,
    redis_url: str,
) -> None:
    run = start_obol(["run"], {**run_env, "DATABASE_URL": postgres_url, "REDIS_URL": redis_url})
    run.wait_for(RUNNING)
    assert f"obol: using DATABASE_URL {postgres_url}" in run.lines
    assert "embedded" not in run.output
    (Path(run_env["FAKE_STATE_DIR"]) / "pricing.die").touch()
    assert run.wait() == 1
    assert "obol: pricing exited unexpectedly (code 4); stopping everything" in run.lines

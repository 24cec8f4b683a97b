"""launch_services: every registered service started and probed until healthy (with fake
services standing in for the real ones)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from obol_cli.embedded import free_port
from obol_cli.launcher import ServiceStartError, launch_services, service_env
from obol_cli.services import SERVICES
from obol_cli.supervisor import Supervisor
from obol_core.apikeys import hash_api_key

FAKES = Path(__file__).parent / "fake_services"


def fake_env(state: Path, **extra: str) -> tuple[dict[str, str], dict[str, int]]:
    ports = {s.name: free_port() for s in SERVICES}
    base = {**os.environ, "PYTHONPATH": str(FAKES), "FAKE_STATE_DIR": str(state), **extra}
    env = service_env(
        base, ports, database_url="postgres://db/x", redis_url="redis://r/0", api_key="obol_k"
    )
    return env, ports


def test_all_services_come_up_with_their_environment(tmp_path: Path) -> None:
    env, ports = fake_env(tmp_path)
    progress: list[str] = []
    with Supervisor(io.StringIO()) as supervisor:
        addresses = launch_services(supervisor, env, ports, timeout=60, progress=progress.append)
    assert addresses == {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    for service in SERVICES:
        assert any(m.startswith(f"{service.name} is healthy at ") for m in progress)
    seen = json.loads((tmp_path / "portal.env.json").read_text())
    assert seen["DATABASE_URL"] == "postgres://db/x"
    assert seen["REDIS_URL"] == "redis://r/0"
    assert seen["OBOL_API_KEY"] == "obol_k"
    assert seen["OBOL_API_KEYS"] == f"demo:admin:{hash_api_key('obol_k')}"
    assert seen["OBOL_HOST"] == "127.0.0.1"
    assert seen["OBOL_WALLET_TARGET"] == f"127.0.0.1:{ports['wallet']}"
    assert seen["OBOL_PRICING_TARGET"] == f"127.0.0.1:{ports['pricing']}"
    assert seen["OBOL_COSTS_TARGET"] == f"127.0.0.1:{ports['costs']}"
    assert seen["OBOL_PORTAL_PORT"] == str(ports["portal"])


def test_a_service_that_exits_is_named_with_its_log(tmp_path: Path) -> None:
    env, ports = fake_env(tmp_path, FAKE_FAIL="pricing")
    with (
        Supervisor(io.StringIO()) as supervisor,
        pytest.raises(ServiceStartError) as failure,
    ):
        launch_services(supervisor, env, ports, timeout=60, progress=lambda _: None)
    assert failure.value.service == "pricing"
    assert "pricing exited with code 3 during start-up" in str(failure.value)
    assert "pricing: boom, cannot start" in str(failure.value)


def test_a_service_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    env, ports = fake_env(tmp_path, FAKE_UNREADY="wallet")
    with (
        Supervisor(io.StringIO()) as supervisor,
        pytest.raises(ServiceStartError) as failure,
    ):
        launch_services(supervisor, env, ports, timeout=1, progress=lambda _: None)
    assert failure.value.service == "wallet"
    assert "not healthy at" in str(failure.value)
    assert "fake wallet listening" in str(failure.value)

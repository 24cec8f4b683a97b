"""`obol bench --quick` end to end, as a real process: the report has every figure as a
number, the machine and config blocks, and an honest write-behind audit.

Performance is never asserted here: timing is what `make bench` measures, on a quiet
machine, not what a test run on a busy one can promise.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

FIGURES = (
    "unary_hot_obol_ops",
    "unary_hot_pg_ops",
    "unary_spread_obol_ops",
    "unary_spread_pg_ops",
    "batch_obol_ops",
    "raw_redis_ops",
    "authorize_script_redis_us",
    "authorize_script_commands_redis_us",
    "authorize_p50_ms",
    "authorize_p95_ms",
    "authorize_p99_ms",
    "authorize_everysec_p99_ms",
    "floor_p50_ms",
    "floor_p99_ms",
    "writebehind_lag_p99_ms",
    "writebehind_lost",
    "writebehind_duplicated",
    "hot_speedup",
    "spread_speedup",
    "batch_vs_raw",
)
TARGETS = (
    "target_hot_speedup_pass",
    "target_batch_ops_pass",
    "target_batch_vs_raw_pass",
    "target_authorize_p99_pass",
    "target_writebehind_lag_pass",
    "target_writebehind_integrity_pass",
    "all_targets_pass",
)
MACHINE = (
    "cpu_model",
    "cores",
    "memory_bytes",
    "python_version",
    "redis_version",
    "postgres_version",
)
CONFIG = ("load_processes", "unary_clients", "unary_seconds", "latency_rate", "spread_wallets")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    # The bench's own embedded Postgres and Redis, whatever this environment points at.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    run = subprocess.run(
        [sys.executable, "-m", "obol_cli", "bench", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "unary_hot_obol_ops =" in run.stdout, output  # progress as it goes

    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert report["dry_run"] is False
    not_numbers = {key: report.get(key) for key in FIGURES if not _is_number(report.get(key))}
    assert not not_numbers, not_numbers
    not_flags = {key: report.get(key) for key in TARGETS if not isinstance(report.get(key), bool)}
    assert not not_flags, not_flags

    assert report["writebehind_lost"] == 0, output
    assert report["writebehind_duplicated"] == 0, output
    assert report["writebehind_lost_requests"] == 0, output
    # The audit looked at real traffic, not at an empty ledger.
    assert report["writebehind_entries_redis"] > 0
    assert report["writebehind_requests_checked"] > 0
    assert report["writebehind_entries_pg"] == report["writebehind_entries_redis"]
    # The transport floor answered every health check it sent.
    assert report["floor_count"] > 0 and report["floor_errors"] == 0, output

    machine = report["machine"]
    assert all(machine.get(key) for key in MACHINE), machine
    assert all(key in report["config"] for key in CONFIG), report["config"]

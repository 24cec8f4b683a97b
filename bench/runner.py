"""One bench run, start to end: storage, the two wallet services and the write-behind
worker, wallets, every scenario in turn, the report. Everything started is stopped at the
end (or on Ctrl-C) and the temporary directory removed; the services' log is kept beside
the report."""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obol_cli.supervisor import Supervisor
from obol_core.apikeys import generate_api_key
from obol_core.ids import new_id

from . import processes
from .config import BenchConfig
from .cpu import CpuMeter, Watched
from .jobs import Job, JobResult, SeedJob, Target, WarmJob
from .machine import machine_info
from .pool import LoadPool
from .progress import say
from .report import add_ratios_and_targets, summary, write_report
from .scenarios import Scenarios
from .script_cost import script_cost
from .storage import BenchError, Storage

BACKENDS = (("redis", "obol"), ("postgres", "pg"))  # OBOL_WALLET_BACKEND, figure label


def log_path_for(out: Path) -> Path:
    return out.with_name(f"{out.stem}.services.log")


def run_bench(config: BenchConfig, out: Path) -> int:
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    workdir = Path(tempfile.mkdtemp(prefix="obol-bench-"))
    workdir.chmod(0o755)  # the embedded Postgres may run as another user (when root)
    mode = "quick" if config.quick else "full"
    say(
        f"{mode} run{' (DRY: stand-in wallet service)' if config.dry_run else ''}; "
        f"{config.client_processes} load processes; services' log {log_path_for(out)}"
    )
    try:
        figures = _run(config, workdir, log_path_for(out))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures["started_at"] = stamp
    figures["elapsed_seconds"] = time.monotonic() - started
    write_report(out, figures)
    print(summary(figures), flush=True)
    say(f"report written to {out} ({figures['elapsed_seconds']:.0f}s in all)")
    return 0


def _run(config: BenchConfig, workdir: Path, log_path: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"dry_run": config.dry_run, "quick": config.quick}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        Storage(workdir, appendfsync=config.redis_appendfsync) as storage,
        log_path.open("w") as log,
        Supervisor(log, color=False) as supervisor,
        LoadPool(config.client_processes) as pool,
    ):
        figures["machine"] = machine_info(
            redis_version=storage.redis_version(),
            postgres_version=storage.postgres_version(),
            fsync_directory=workdir,
        )
        figures["config"] = _config_block(config, storage)
        say("measuring the authorize script's Redis time on a private Redis")
        figures.update(script_cost(workdir, config.partitions))
        say(
            f"  {figures['authorize_script_redis_us']:.0f} us per call, of which "
            f"{figures['authorize_script_commands_redis_us']:.0f} us in its "
            f"{figures['authorize_script_commands_per_call']:.0f} Redis commands"
        )
        api_key = generate_api_key()
        envs = {
            backend: processes.wallet_env(
                config,
                backend,
                database_url=storage.fresh_database(label),
                redis_url=storage.redis_url,
                api_key=api_key,
            )
            for backend, label in BACKENDS
        }
        say("starting the wallet service twice: OBOL_WALLET_BACKEND=redis and =postgres")
        endpoints = [
            processes.start_wallet(
                supervisor, f"wallet_{label}", envs[backend], dry_run=config.dry_run
            )
            for backend, label in BACKENDS
        ]
        processes.wait_healthy(supervisor, endpoints, config.service_start_timeout_seconds)
        if not config.dry_run:
            worker = processes.start_writebehind(supervisor, envs["redis"])
            processes.wait_healthy(supervisor, [worker], config.service_start_timeout_seconds)

        def alive() -> None:
            processes.check_alive(supervisor)

        def components() -> dict[str, list[Watched]]:
            watched: dict[str, list[Watched]] = {
                child.name: [(child.pid, False)] for child in supervisor.children
            }
            watched["load"] = [(pid, False) for pid in pool.pids]
            watched["bench"] = [(os.getpid(), False)]
            for name, pid in storage.pids().items():
                watched[name] = [(pid, name == "postgres")]  # with its backends
            return watched

        obol, pg = (Target(e.address, api_key) for e in endpoints)
        ids = _seed(config, pool, [envs[b] for b, _ in BACKENDS])
        _warm(pool, [obol, pg], ids)
        alive()
        hot_obol, spread_obol = ids[0][0], tuple(ids[0][1:])
        hot_pg, spread_pg = ids[1][0], tuple(ids[1][1:])
        s = Scenarios(config, pool, storage.redis_url, alive, figures, CpuMeter(components))
        s.pairs("unary_hot_obol_ops", "unary, hot wallet, redis backend", obol, (hot_obol,))
        s.drain("unary_hot")
        s.pairs("unary_hot_pg_ops", "unary, hot wallet, postgres backend", pg, (hot_pg,))
        s.pairs("unary_spread_obol_ops", "unary, spread, redis backend", obol, spread_obol)
        s.drain("unary_spread")
        s.pairs("unary_spread_pg_ops", "unary, spread, postgres backend", pg, spread_pg)
        s.batch(obol, spread_obol)
        s.drain("batch")
        s.raw(spread_obol)
        s.drain("raw")
        s.latency(obol, spread_obol, appendfsync=config.redis_appendfsync)
        s.drain("latency")
        # The documented relaxed mode (DESIGN.md section 4), measured, not assumed: the
        # same load with Redis fsyncing its AOF once a second instead of before each reply.
        s.latency(obol, spread_obol, appendfsync="everysec")
        s.drain("latency_everysec")
        s.transport_floor(obol)
        s.writebehind(obol, spread_obol, envs["redis"]["DATABASE_URL"])
        add_ratios_and_targets(figures)
    return figures


def _config_block(config: BenchConfig, storage: Storage) -> dict[str, Any]:
    block = config.to_json()
    block.update(
        {
            "load_processes": config.client_processes,
            "load_generator": "Python multiprocessing (spawn), asyncio + grpc.aio in each",
            "redis": "embedded" if storage.redis_embedded else "REDIS_URL",
            "postgres": "DATABASE_URL" if storage.external_postgres else "embedded",
            "postgres_durability": "fsync on, synchronous_commit on",
            "service_log_level": "warning",
            "amount_per_operation": 1,
            "python": sys.version.split()[0],
        }
    )
    return block


def _in_rounds(pool: LoadPool, jobs: Sequence[Job], timeout: float) -> list[JobResult]:
    """Jobs on the processes, `pool.size` at a time (in parallel within a round)."""
    results: list[JobResult] = []
    for start in range(0, len(jobs), pool.size):
        results += pool.run(jobs[start : start + pool.size], timeout=timeout)
    return results


def _seed(config: BenchConfig, pool: LoadPool, envs: list[dict[str, str]]) -> list[list[str]]:
    """Per backend: [hot wallet, spread wallets...], made in parallel (one process each)."""
    count = config.spread_wallets
    if config.dry_run:
        return [[new_id("wal") for _ in range(count + 1)] for _ in envs]
    say(f"creating 1 hot + {count} spread wallets per backend (not timed)")
    started = time.monotonic()
    results = _in_rounds(pool, [SeedJob(env, count) for env in envs], timeout=900)
    say(f"  {len(envs)} x {count + 1} wallets funded in {time.monotonic() - started:.1f}s")
    return [result.wallet_ids for result in results]


def _warm(pool: LoadPool, targets: list[Target], ids: list[list[str]]) -> None:
    """One GetWallet per wallet, both services at once, so each service's wallet directory
    knows every wallet before anything is timed (as in steady state)."""
    started = time.monotonic()
    jobs: list[Job] = [
        WarmJob(target, tuple(wallets), concurrency=64)
        for target, wallets in zip(targets, ids, strict=True)
    ]
    for target, result in zip(targets, _in_rounds(pool, jobs, timeout=900), strict=True):
        if result.failed:
            raise BenchError(f"GetWallet failed {result.failed} times on {target.address}")
    say(f"  both services have seen all their wallets ({time.monotonic() - started:.1f}s)")

"""`obol bench` (what `make bench` runs): the wallet's hot path on the Redis backend side by
side with the "just use Postgres" backend, in one run on this machine, written as a JSON
report (flat figures, ratios, pass/fail targets, the machine and the configuration).

It starts its own embedded Postgres and Redis (unless DATABASE_URL / REDIS_URL are set),
one wallet service per backend and the write-behind worker, all on 127.0.0.1, and stops
them at the end. The figures are explained in bench/README.md of the repository.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ..errors import ObolCliError
from ..signals import Interrupted, StopSignals

# The bench lives in the repository's bench/ directory (it is not installed with obol).
REPO_ROOT = Path(__file__).resolve().parents[3]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bench",
        help="benchmark the wallet: Redis backend vs the Postgres baseline (make bench)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results.json"), help="report path (%(default)s)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every scenario for a second or two with small numbers (same keys; for tests)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="exercise the bench against a stand-in wallet service (figures mean nothing)",
    )
    parser.add_argument(
        "--load-processes",
        type=int,
        default=None,
        metavar="N",
        help="load-generating processes (default: the number of cores, at least 2)",
    )
    parser.set_defaults(handler=bench)


def bench(args: argparse.Namespace) -> int:
    if not (REPO_ROOT / "bench" / "runner.py").is_file():
        raise ObolCliError(f"the bench is not in {REPO_ROOT / 'bench'} (run from a checkout)")
    if args.load_processes is not None and not 1 <= args.load_processes <= 64:
        raise ObolCliError("--load-processes must be between 1 and 64")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from bench.config import full_config, quick_config
    from bench.runner import run_bench

    make = quick_config if args.quick else full_config
    config = replace(make(client_processes=args.load_processes), dry_run=args.dry_run)
    with StopSignals(notify=lambda message: print(f"obol bench: {message}", flush=True)) as signals:
        try:
            return run_bench(config, args.out.resolve())
        except Interrupted:
            print("obol bench: interrupted; stopped everything", flush=True)
            return 130
        finally:
            signals.shutting_down()

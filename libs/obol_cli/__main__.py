"""The `obol` command-line tool: the operator's and developer's chores."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import apikey, bench, import_customers, migrate, rebuild, reconcile, run, verify
from .errors import ObolCliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obol", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (run, migrate, apikey, bench, import_customers, reconcile, rebuild, verify):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ObolCliError as err:
        print(f"obol: error: {err}", file=sys.stderr)
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()

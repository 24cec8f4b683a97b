"""`obol apikey create`: a new operator API key and its OBOL_API_KEYS entry."""

from __future__ import annotations

import argparse
import sys

from obol_core.apikeys import ApiKey, Scope, generate_api_key, hash_api_key

from ..errors import ObolCliError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("apikey", help="manage operator API keys")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="generate a key; print it once, with its name:scope:sha256hex entry",
        description="Prints the raw key (line 1, shown only now) and the entry to add to "
        "OBOL_API_KEYS (line 2) on stdout; Obol itself only ever stores the hash.",
    )
    create.add_argument("--name", required=True, help="a label for the key (e.g. backend)")
    create.add_argument("--scope", required=True, choices=[s.label for s in Scope][::-1])
    create.set_defaults(handler=create_key)


def create_key(args: argparse.Namespace) -> int:
    key = generate_api_key()
    try:
        entry = ApiKey(name=args.name, scope=Scope.parse(args.scope), digest=hash_api_key(key))
    except ValueError as err:
        raise ObolCliError(str(err)) from None
    print(key)
    print(f"{entry.name}:{entry.scope.label}:{entry.digest}")
    print(
        "obol: line 1 is the key, shown once: give it to the client "
        "(gRPC metadata 'authorization: Bearer <key>').\n"
        "obol: line 2 goes into OBOL_API_KEYS (comma-separated entries) of every service.",
        file=sys.stderr,
    )
    return 0

"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader) calls the wallet service."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from obol_cli.launcher import StackInfo

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("wallet_client.mjs")


def _include_dirs() -> list[str]:
    """Where the .proto imports live: ours, the generated validate.proto, google's."""
    import grpc_tools
    from google.rpc import status_pb2

    return [
        str(ROOT / "protos"),
        str(ROOT / "build" / "proto-include"),
        str(Path(grpc_tools.__file__).parent / "_proto"),
        str(Path(status_pb2.__file__).parents[2]),
    ]


async def test_node_client_creates_and_reads_a_customer(stack: StackInfo) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is required by this test (see README)"
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT),
        stack.addresses["wallet"],
        stack.api_key,
        "node-customer",
        *_include_dirs(),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    observed = json.loads(stdout)

    created = observed["created"]["response"]["customer"]
    assert created["external_id"] == "node-customer"
    assert created["metadata"] == {"lang": "js"}
    assert observed["fetched"]["response"]["customer"]["customer_id"] == created["customer_id"]

    invalid = observed["invalid"]["error"]
    assert invalid["code"] == 3  # INVALID_ARGUMENT
    assert "request_id" in invalid["details"]

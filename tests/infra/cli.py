"""`obol` as a real process, for the tests of its commands."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping


async def run_obol(env: Mapping[str, str], *args: str) -> tuple[int, str]:
    """`python -m obol_cli ARGS` with `env`; (exit code, output with stderr merged)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "obol_cli",
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()

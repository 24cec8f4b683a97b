"""Client streams read as sent, for handlers that validate each message themselves.

The edge interceptor validates every message of a client stream and fails the whole call
on the first bad one. Streams whose messages are independent (the wallet's Meter stream,
an import's rows) read the raw messages with `raw_requests(context)` instead, validate
each with `obol_core.validation.validate_request` and answer each on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio


async def raw_requests(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
    """The client's messages in order, unvalidated, until the client half-closes."""
    while (message := await context.read()) is not grpc.aio.EOF:
        yield message

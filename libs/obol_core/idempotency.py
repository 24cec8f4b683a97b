"""Idempotent mutations in Postgres.

Each service keeps an `idempotency_keys` table in its own schema (see its first migration):
request_id text primary key, method text, request_hash bytea, response bytea, created_at.

The request_id is claimed in the same transaction as the change it guards, so a failed
write releases the claim (a retry then runs for real) and a concurrent duplicate blocks on
the primary key until the first commits, then reads the stored response: it never runs
twice and never reports a result that does not exist yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from google.protobuf.message import Message

from .errors import AlreadyExists
from .postgres import Queryable

ResponseT = TypeVar("ResponseT", bound=Message)


class IdempotencyKeyReused(AlreadyExists):
    """The request_id was first used for a different request."""

    reason = "IDEMPOTENCY_KEY_REUSED"


def request_fingerprint(method: str, request: Message) -> bytes:
    """sha256 over the method and the request's deterministic serialization."""
    digest = hashlib.sha256(method.encode())
    digest.update(request.SerializeToString(deterministic=True))
    return digest.digest()


async def run_once(
    pool: asyncpg.Pool[asyncpg.Record],
    *,
    request_id: str,
    method: str,
    request: Message,
    response_type: type[ResponseT],
    mutation: Callable[[Queryable], Awaitable[ResponseT]],
) -> ResponseT:
    """Run `mutation` at most once per request_id; replays return the first response."""
    fingerprint = request_fingerprint(method, request)
    async with pool.acquire() as conn, conn.transaction():
        claimed = await conn.fetchval(
            """INSERT INTO idempotency_keys (request_id, method, request_hash, response)
               VALUES ($1, $2, $3, ''::bytea)
               ON CONFLICT (request_id) DO NOTHING
               RETURNING true""",
            request_id,
            method,
            fingerprint,
        )
        if not claimed:
            row = await conn.fetchrow(
                "SELECT request_hash, response FROM idempotency_keys WHERE request_id = $1",
                request_id,
            )
            assert row is not None
            if row["request_hash"] != fingerprint:
                raise IdempotencyKeyReused(
                    f"request_id {request_id!r} was already used for a different request",
                    metadata={"request_id": request_id, "method": method},
                )
            return response_type.FromString(row["response"])
        response = await mutation(conn)
        await conn.execute(
            "UPDATE idempotency_keys SET response = $2 WHERE request_id = $1",
            request_id,
            response.SerializeToString(deterministic=True),
        )
        return response
